"""Enrichment of click events at ingest (SPEC 15): referrer, referrer_host,
utm_*, page_path, browser, os, device, is_bot and country are computed once
per event, packed with it into the log (so a replay reads the same values
whatever the rules are then), and read back from
GET /api/v1/streams/clicks/events. Bots are accepted and counted in `bots`
but the built-in views skip them."""
import os
import signal
import tempfile

import mmdb_writer
from harness import Server, run_tests

BASE = 1767225600000  # 2026-01-01T00:00:00Z
RULES = "/usr/share/uap-core/regexes.yaml"
REPLAY = ["--idle-timeout", "0", "--shards", "2"]

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/120.0.0.0 Safari/537.36")

COLUMNS = ("referrer", "referrer_host", "utm_source", "utm_medium", "utm_campaign", "utm_term",
           "utm_content", "page_path", "browser", "os", "country", "device", "is_bot")


def post(srv, events, headers=None):
    status, body = srv.request("POST", "/api/v1/events", events, headers=headers)
    assert status == 202, (status, body)
    assert body["rejected"] == 0, body
    return body


def recent(srv, limit=100):
    status, body = srv.request("GET", "/api/v1/streams/clicks/events?limit=%d" % limit)
    assert status == 200, (status, body)
    return body["items"]


def by_user(items):
    return {it["user_id"]: it for it in items}


def stats(srv):
    status, body = srv.request("GET", "/api/v1/stats")
    assert status == 200
    return body


def test_user_agent_columns():
    if not os.path.exists(RULES):
        print("skip: no uap-core rules")
        return
    with Server(REPLAY) as srv:
        for user, ua in (("chrome", CHROME), ("iphone", IPHONE), ("googlebot", GOOGLEBOT),
                         ("headless", HEADLESS)):
            post(srv, [{"user_id": user, "page_url": "/p", "timestamp": BASE}], {"User-Agent": ua})
        # The event's user_agent field wins over the header.
        post(srv, [{"user_id": "field", "page_url": "/p", "timestamp": BASE, "user_agent": IPHONE}],
             {"User-Agent": GOOGLEBOT})
        # No User-Agent at all: the columns are null, and it is no bot.
        status, _, _ = srv.raw_request("POST", "/api/v1/events",
                                       b'{"user_id":"none","page_url":"/p","timestamp":%d}' % BASE,
                                       {"Content-Type": "application/json", "User-Agent": ""})
        assert status == 202
        got = by_user(recent(srv))
        want = {
            "chrome": ("Chrome", "Windows", "desktop", False),
            "iphone": ("Mobile Safari", "iOS", "mobile", False),
            "googlebot": ("Googlebot", "Other", "bot", True),
            "headless": ("HeadlessChrome", "Linux", "bot", True),
            "field": ("Mobile Safari", "iOS", "mobile", False),
            "none": (None, None, None, False),
        }
        for user, (browser, os_, device, bot) in want.items():
            it = got[user]
            assert (it["browser"], it["os"], it["device"], it["is_bot"]) == (browser, os_, device, bot), it
        assert stats(srv)["bots"] == 2


def test_url_and_referrer_columns():
    with Server(REPLAY) as srv:
        post(srv, [
            {"user_id": "a", "page_url": "https://shop.example/p/7?utm_source=news&utm_medium=email"
                                         "&utm_campaign=spring+sale&utm_term=red%20shoes&utm_content=top#x",
             "timestamp": BASE},
            {"user_id": "b", "page_url": "/plain", "timestamp": BASE,
             "referrer": "https://Search.Example:8443/q?x=1"},
            {"user_id": "c", "page_url": "?only=query", "timestamp": BASE},
        ], {"Referer": "https://ref.example/from"})
        got = by_user(recent(srv))
        a, b, c = got["a"], got["b"], got["c"]
        assert (a["utm_source"], a["utm_medium"], a["utm_campaign"], a["utm_term"], a["utm_content"]) == \
            ("news", "email", "spring sale", "red shoes", "top"), a
        assert a["page_path"] == "/p/7"
        # The Referer header serves events without their own referrer.
        assert (a["referrer"], a["referrer_host"]) == ("https://ref.example/from", "ref.example"), a
        assert (b["referrer"], b["referrer_host"]) == ("https://Search.Example:8443/q?x=1", "search.example")
        assert b["page_path"] == "/plain" and b["utm_source"] is None
        assert c["page_path"] is None
        for it in (a, b, c):
            assert set(COLUMNS) <= set(it), it
            assert it["country"] is None  # no --geoip
        # Wrong types are a per-event reason.
        status, body = srv.request("POST", "/api/v1/events",
                                   [{"user_id": "d", "page_url": "/p", "user_agent": 7},
                                    {"user_id": "e", "page_url": "/p", "referrer": ["x"]}])
        assert status == 202 and body["rejected"] == 2, body
        assert [e["error"] for e in body["errors"]] == ["user_agent must be a string",
                                                         "referrer must be a string"], body


def test_keep_alive_requests_enrich_each_event_afresh():
    """A keep-alive connection reuses the enrichment buffer of its last
    request (server/http_post.c): each request's columns are its own, after
    a request with longer strings, with none, or with too many to keep."""
    import http.client
    import json
    with Server(REPLAY) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
        many = [{"user_id": "m%d" % i, "page_url": "/m?utm_source=" + "s" * 200, "timestamp": BASE}
                for i in range(40)]   # over 4 KiB of strings: not kept
        steps = [
            ([{"user_id": "a", "page_url": "/long/" + "p" * 300 + "?utm_source=" + "x" * 200,
               "timestamp": BASE}], {"Referer": "https://ref.example/" + "r" * 200}),
            ([{"user_id": "b", "page_url": "/b", "timestamp": BASE}], {}),
            (many, {}),
            ([{"user_id": "c", "page_url": "/c?utm_source=cc", "timestamp": BASE}], {"User-Agent": CHROME}),
            ([{"user_id": "d", "page_url": "/d", "timestamp": BASE}], {}),
        ]
        sock = None
        for events, headers in steps:
            conn.request("POST", "/api/v1/events", json.dumps(events),
                         dict(headers, **{"Content-Type": "application/json"}))
            r = conn.getresponse()
            body = json.loads(r.read())
            assert r.status == 202 and body["accepted"] == len(events), body
            sock = sock or conn.sock
            assert conn.sock is sock, "the connection was not kept alive"
        conn.close()
        got = by_user(recent(srv))
        a, b, c, d = got["a"], got["b"], got["c"], got["d"]
        assert a["page_path"] == "/long/" + "p" * 300 and a["utm_source"] == "x" * 200, a
        assert a["referrer_host"] == "ref.example", a
        assert (b["page_path"], b["utm_source"], b["referrer"], b["browser"]) == ("/b", None, None, None), b
        assert got["m7"]["utm_source"] == "s" * 200
        assert (c["page_path"], c["utm_source"], c["browser"]) == ("/c", "cc", "Chrome"), c
        assert (d["page_path"], d["utm_source"], d["referrer"], d["browser"]) == ("/d", None, None, None), d


def test_bots_are_counted_but_skipped_by_the_builtin_views():
    if not os.path.exists(RULES):
        print("skip: no uap-core rules")
        return
    with Server(REPLAY + ["--window", "10s"]) as srv:
        humans = [{"user_id": "h%d" % i, "page_url": "/human", "timestamp": BASE + i} for i in range(3)]
        bots = [{"user_id": "crawler", "page_url": "/bot-page", "timestamp": BASE + 10 + i} for i in range(4)]
        post(srv, humans, {"User-Agent": CHROME})
        post(srv, bots, {"User-Agent": GOOGLEBOT})
        # A headless browser named in the event itself, on the human page.
        post(srv, [{"user_id": "h0", "page_url": "/human", "timestamp": BASE + 20, "user_agent": HEADLESS}],
             {"User-Agent": CHROME})
        st = stats(srv)
        assert (st["accepted"], st["bots"]) == (8, 5), st
        status, _, text = srv.raw_request("GET", "/metrics")
        assert status == 200 and b"\nclickflow_events_bot_total 5\n" in text, text
        # Close the windows and check every view.
        status, _ = srv.request("POST", "/api/v1/watermark", {"watermark": BASE + 3600000})
        assert status == 200
        _, win = srv.request("GET", "/api/v1/windows?type=tumbling&state=closed")
        assert [(w["page_url"], w["count"], w["unique_users"]) for w in win["items"]] == [("/human", 3, 3)], win
        _, trend = srv.request("GET", "/api/v1/trending?n=10")
        assert [t["page_url"] for t in trend["items"]] == ["/human"], trend
        _, sess = srv.request("GET", "/api/v1/sessions?limit=100")
        assert sorted(s["user_id"] for s in sess["items"]) == ["h0", "h1", "h2"], sess
        assert [s["page_views"] for s in sess["items"] if s["user_id"] == "h0"] == [1], sess
        # Stored all the same, with their enrichment.
        items = recent(srv)
        assert sum(1 for it in items if it["is_bot"]) == 5


def test_kill9_keeps_bots_and_the_enrichment_of_replayed_events():
    if not os.path.exists(RULES):
        print("skip: no uap-core rules")
        return
    data = tempfile.mkdtemp(prefix="clickflow-enrich-")
    srv = Server(REPLAY, data_dir=data)
    srv.start()
    try:
        post(srv, [{"user_id": "u%d" % i, "page_url": "/a?utm_source=s%d" % i, "timestamp": BASE + i,
                    "event_id": "e%d" % i} for i in range(5)], {"User-Agent": CHROME, "Referer": "https://r.example/"})
        post(srv, [{"user_id": "b%d" % i, "page_url": "/b", "timestamp": BASE + 10 + i, "event_id": "b%d" % i}
                   for i in range(3)], {"User-Agent": GOOGLEBOT})
        before = recent(srv)
        assert stats(srv)["bots"] == 3
        srv.stop(signal.SIGKILL)
        # The rules are gone on restart: replayed events keep what was
        # computed at ingest, new ones get null User-Agent columns.
        srv.args = REPLAY + ["--ua-regexes", os.path.join(data, "missing-regexes.yaml")]
        srv.start()
        assert "no User-Agent rules" in srv.read_log()
        assert recent(srv) == before
        st = stats(srv)
        assert (st["accepted"], st["bots"]) == (8, 3), st
        # A retried bot event is a duplicate, not a second bot.
        status, body = srv.request("POST", "/api/v1/events",
                                   [{"user_id": "b0", "page_url": "/b", "timestamp": BASE + 10, "event_id": "b0"}],
                                   {"User-Agent": GOOGLEBOT})
        assert status == 202 and body["duplicates"] == 1, body
        post(srv, [{"user_id": "late", "page_url": "/c", "timestamp": BASE + 20}], {"User-Agent": GOOGLEBOT})
        it = recent(srv, 1)[0]
        assert (it["user_id"], it["browser"], it["is_bot"]) == ("late", None, False), it
        assert stats(srv)["bots"] == 3
        srv.stop(signal.SIGKILL)

        # Across a snapshot too: the counter and the newest events are saved
        # with it, the events after it are replayed.
        srv.args = REPLAY + ["--snapshot-interval", "1s"]
        srv.start()
        log_mark = len(srv.read_log())
        post(srv, [{"user_id": "s", "page_url": "/s", "timestamp": BASE + 30, "event_id": "s1"}],
             {"User-Agent": HEADLESS})
        while "snapshot at LSN" not in srv.read_log()[log_mark:]:
            status, _ = srv.request("GET", "/healthz")  # waits on the server's own log line
        post(srv, [{"user_id": "s", "page_url": "/s", "timestamp": BASE + 31, "event_id": "s2"}],
             {"User-Agent": GOOGLEBOT})
        assert stats(srv)["bots"] == 5
        srv.stop(signal.SIGKILL)
        srv.start()
        st = stats(srv)
        assert (st["accepted"], st["bots"]) == (11, 5), st
        # The newest events come back from the snapshot and the log alike.
        items = recent(srv)
        assert [it["seq"] for it in items] == list(range(10, -1, -1)), items
        assert items[0]["browser"] == "Googlebot"
        assert by_user(items)["u0"]["browser"] == "Chrome" and by_user(items)["u0"]["utm_source"] == "s0"
    finally:
        srv.stop()


def test_country_from_geoip():
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "country.mmdb")
        mmdb_writer.write_country_db(db, {"127.0.0.0/8": "NZ", "10.0.0.0/8": "DE"})
        with Server(REPLAY + ["--geoip", db]) as srv:
            post(srv, [{"user_id": "u", "page_url": "/p", "timestamp": BASE}])
            assert recent(srv, 1)[0]["country"] == "NZ"
        # A file that is not a MaxMind DB: a warning, and country is null.
        bad = os.path.join(tmp, "bad.mmdb")
        with open(bad, "wb") as f:
            f.write(b"not a database")
        with Server(REPLAY + ["--geoip", bad]) as srv:
            post(srv, [{"user_id": "u", "page_url": "/p", "timestamp": BASE}])
            assert recent(srv, 1)[0]["country"] is None
            assert "cannot open the GeoIP database" in srv.read_log()


def test_missing_rules_and_enrichment_off():
    with Server(REPLAY + ["--ua-regexes", "/nonexistent/regexes.yaml"]) as srv:
        assert "no User-Agent rules" in srv.read_log()
        post(srv, [{"user_id": "u", "page_url": "/p?utm_source=x", "timestamp": BASE}], {"User-Agent": GOOGLEBOT})
        it = recent(srv, 1)[0]
        assert (it["browser"], it["os"], it["device"], it["is_bot"], it["utm_source"]) == \
            (None, None, None, False, "x"), it
        assert stats(srv)["bots"] == 0
    with Server(REPLAY + ["--enrich", "off"]) as srv:
        post(srv, [{"user_id": "u", "page_url": "/p?utm_source=x", "timestamp": BASE}],
             {"User-Agent": GOOGLEBOT, "Referer": "https://r.example/"})
        it = recent(srv, 1)[0]
        assert all(it[c] is None for c in COLUMNS if c != "is_bot") and it["is_bot"] is False, it


def test_recent_events_are_bounded_and_newest_first():
    with Server(REPLAY + ["--retain-results", "3"]) as srv:
        for i in range(5):
            post(srv, [{"user_id": "u%d" % i, "page_url": "/p", "timestamp": BASE + i, "name": "n%d" % i,
                        "properties": {"i": i}}])
        items = recent(srv)
        assert [it["user_id"] for it in items] == ["u4", "u3", "u2"], items
        assert [it["seq"] for it in items] == [4, 3, 2]
        assert items[0]["properties"] == {"i": 4} and items[0]["name"] == "n4"
        assert [it["user_id"] for it in recent(srv, 2)] == ["u4", "u3"]
        for q in ("0", "100001", "x"):
            status, body = srv.request("GET", "/api/v1/streams/clicks/events?limit=" + q)
            assert status == 400 and "limit" in body["error"], (q, status, body)
        status, _ = srv.request("GET", "/api/v1/streams/orders/events")
        assert status == 404


def test_compatible_endpoints_enrich():
    """Segment, Plausible and Umami events are enriched like POST /api/v1/events: the
    headers and the peer, and what a Segment message says of the browser it relays
    (context.userAgent, context.page.referrer, context.ip for the country,
    context.campaign for utm_*, which win over the URL's tags)."""
    if not os.path.exists(RULES):
        print("skip: no uap-core rules")
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "country.mmdb")
        mmdb_writer.write_country_db(db, {"127.0.0.0/8": "NZ", "10.0.0.0/8": "DE"})
        with Server(REPLAY + ["--geoip", db, "--site", "shop=https://shop.example"]) as srv:
            relayed = {"type": "track", "event": "buy", "userId": "seg-relayed", "messageId": "m1",
                       "timestamp": "2026-01-01T00:00:00.000Z",
                       "properties": {"url": "https://shop.example/p?utm_source=url&utm_term=t"},
                       "context": {"ip": "10.1.2.3", "userAgent": IPHONE,
                                   "page": {"referrer": "https://ref.example/x"},
                                   "campaign": {"source": "news", "medium": "email", "name": "spring"}}}
            plain = {"type": "page", "userId": "seg-plain", "messageId": "m2",
                     "timestamp": "2026-01-01T00:00:00.001Z",
                     "context": {"page": {"url": "https://shop.example/q?utm_source=url2"}}}
            unknown_ip = {"type": "track", "event": "e", "userId": "seg-unknown", "messageId": "m3",
                          "timestamp": "2026-01-01T00:00:00.002Z", "properties": {"url": "/r"},
                          "context": {"ip": "192.0.2.1"}}
            status, body = srv.request("POST", "/v1/batch", {"batch": [relayed, plain, unknown_ip],
                                                              "writeKey": "shop"},
                                       headers={"User-Agent": GOOGLEBOT})
            assert status == 200, (status, body)
            status, body = srv.request("POST", "/api/event",
                                       {"n": "pageview", "u": "https://shop.example/pl?utm_medium=cpc",
                                        "d": "shop", "r": "https://r.example/"},
                                       headers={"User-Agent": CHROME, "Content-Type": "text/plain"})
            assert status == 202, (status, body)
            status, body = srv.request("POST", "/api/send",
                                       {"type": "event", "payload": {"website": "shop", "id": "umami-u",
                                                                     "url": "/u?utm_campaign=uc"}},
                                       headers={"User-Agent": IPHONE})
            assert status == 200, (status, body)
            items = recent(srv)
            got = by_user(items)
            it = got["seg-relayed"]
            assert (it["country"], it["browser"], it["device"], it["is_bot"]) == ("DE", "Mobile Safari", "mobile", False), it
            assert (it["utm_source"], it["utm_medium"], it["utm_campaign"], it["utm_term"]) == \
                ("news", "email", "spring", "t"), it
            assert (it["referrer_host"], it["page_path"]) == ("ref.example", "/p"), it
            # No context: the request's User-Agent (a bot here) and the peer's country.
            it = got["seg-plain"]
            assert (it["country"], it["browser"], it["is_bot"], it["utm_source"]) == ("NZ", "Googlebot", True, "url2"), it
            # A relayed address the database does not know: no country (not the relay's).
            assert got["seg-unknown"]["country"] is None, got["seg-unknown"]
            plausible = [x for x in items if x["page_url"].startswith("https://shop.example/pl")]
            assert len(plausible) == 1, items
            it = plausible[0]
            assert (it["country"], it["browser"], it["utm_medium"], it["referrer_host"]) == \
                ("NZ", "Chrome", "cpc", "r.example"), it
            it = got["umami-u"]
            assert (it["country"], it["browser"], it["utm_campaign"]) == ("NZ", "Mobile Safari", "uc"), it
            # The two Googlebot events were accepted and counted (skipped by the views).
            assert got["seg-unknown"]["is_bot"] is True
            assert stats(srv)["bots"] == 2


if __name__ == "__main__":
    run_tests([
        test_user_agent_columns,
        test_url_and_referrer_columns,
        test_keep_alive_requests_enrich_each_event_afresh,
        test_bots_are_counted_but_skipped_by_the_builtin_views,
        test_kill9_keeps_bots_and_the_enrichment_of_replayed_events,
        test_country_from_geoip,
        test_missing_rules_and_enrichment_off,
        test_recent_events_are_bounded_and_newest_first,
        test_compatible_endpoints_enrich,
    ])
