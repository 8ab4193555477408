"""The compatible endpoints and site keys of SPEC 15 at the HTTP level: who
may send (ingest token, site key, Origin), the per-IP rate, Segment's size
limits, bad bodies, the answers each API gives, CORS and preflight, and the
derived visitor id. Every refusal is checked to have accepted nothing."""
import json

import compat_util
from harness import Server, run_tests

TOKEN = "it-secret-token"
AUTH = {"Authorization": "Bearer " + TOKEN}
SITE = "shop=https://shop.example,https://www.shop.example"


def accepted(srv):
    status, stats = srv.request("GET", "/api/v1/stats", headers=AUTH)
    assert status == 200, stats
    return stats["accepted"], stats["duplicates"]


def page_count(srv, page):
    return compat_util.page_count(srv, page, AUTH)


def basic(key):
    import base64
    return {"Authorization": "Basic " + base64.b64encode((key + ":").encode()).decode()}


def track(i, **extra):
    m = {"type": "track", "event": "e", "userId": "u%d" % i, "messageId": "m%d" % i,
         "properties": {"url": "/p%d" % i}}
    m.update(extra)
    return m


def test_write_keys_and_answers():
    with Server(["--site", SITE, "--ingest-token", TOKEN]) as srv:
        # Segment: the key as Basic user, in the body, or the ingest token.
        status, body = srv.request("POST", "/v1/batch", {"batch": [track(1)]}, headers=basic("shop"))
        assert (status, body) == (200, {"success": True}), (status, body)
        status, body = srv.request("POST", "/v1/batch", {"batch": [track(2)], "writeKey": "shop"})
        assert (status, body) == (200, {"success": True}), (status, body)
        status, body = srv.request("POST", "/v1/track", track(3), headers=basic(TOKEN))
        assert status == 200, body
        status, body = srv.request("POST", "/v1/t", json.dumps(track(4)), headers=dict(AUTH, **{"Content-Type": "text/plain"}))
        assert status == 200, body
        assert accepted(srv) == (4, 0)
        # Missing and unknown keys: 401, nothing accepted.
        status, body = srv.request("POST", "/v1/batch", {"batch": [track(5)]})
        assert status == 401 and body["success"] is False and "missing write key" in body["error"], body
        status, body = srv.request("POST", "/v1/batch", {"batch": [track(5)]}, headers=basic("nope"))
        assert status == 401 and "unknown write key" in body["error"], body
        status, body = srv.request("POST", "/api/send", {"type": "event", "payload": {"website": "nope", "url": "/"}})
        assert status == 401, body
        status, body = srv.request("POST", "/api/event", {"n": "pageview", "u": "/", "d": "nope"})
        assert status == 401, body
        assert accepted(srv) == (4, 0)
        # Plausible answers 202 "ok" (any content type), Umami 200.
        status, hdrs, raw = srv.raw_request("POST", "/api/event", json.dumps({"n": "pageview", "u": "https://shop.example/pl", "d": "shop"}),
                                            headers={"Content-Type": "text/plain"})
        assert (status, raw) == (202, b"ok"), (status, raw)
        status, body = srv.request("POST", "/api/send", {"type": "event", "payload": {"website": "shop", "url": "/um"}})
        assert status == 200, body
        status, body = srv.request("POST", "/api/send", {"type": "identify", "payload": {"website": "shop", "data": {"a": 1}}})
        assert status == 200, body
        assert accepted(srv) == (6, 0)
        # A retried messageId is a duplicate, answered like the first time.
        status, body = srv.request("POST", "/v1/batch", {"batch": [track(1)]}, headers=basic("shop"))
        assert status == 200, body
        assert accepted(srv) == (6, 1)


def test_origin_checks_and_cors():
    with Server(["--site", SITE]) as srv:
        ev = json.dumps({"n": "pageview", "u": "https://shop.example/o", "d": "shop"})
        for origin in ("https://shop.example", "https://WWW.shop.example"):
            status, hdrs, raw = srv.raw_request("POST", "/api/event", ev, headers={"Origin": origin})
            assert status == 202, (status, raw)
            assert hdrs.get("access-control-allow-origin") == origin, hdrs
            assert "Origin" in hdrs.get("vary", ""), hdrs
        for origin in ("https://evil.example", "null", "https://shop.example.evil.example"):
            status, hdrs, raw = srv.raw_request("POST", "/api/event", ev, headers={"Origin": origin})
            assert status == 403, (status, raw)
            assert "access-control-allow-origin" not in hdrs, hdrs
            assert "Origin" in json.loads(raw)["error"]
        # Server-side SDKs send no Origin: accepted.
        status, _, _ = srv.raw_request("POST", "/api/event", ev)
        assert status == 202
        assert accepted(srv) == (3, 0)
        # Preflight: a site's origin may go on; another gets no CORS grant.
        status, hdrs, _ = srv.raw_request("OPTIONS", "/v1/batch", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization"})
        assert status == 204, status
        assert hdrs.get("access-control-allow-origin") == "https://shop.example", hdrs
        assert "POST" in hdrs.get("access-control-allow-methods", ""), hdrs
        assert "authorization" in hdrs.get("access-control-allow-headers", "").lower(), hdrs
        status, hdrs, _ = srv.raw_request("OPTIONS", "/v1/batch", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in hdrs, hdrs
    # With --cors-origin too: each CORS header once, the site's origin granted.
    with Server(["--site", SITE, "--cors-origin", "https://dash.example"]) as srv:
        import http.client
        for method, path, body, hdrs in (
                ("POST", "/api/event", json.dumps({"n": "pageview", "u": "/c", "d": "shop"}), {}),
                ("OPTIONS", "/api/event", None, {"Access-Control-Request-Method": "POST"})):
            conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=30)
            conn.request(method, path, body=body, headers=dict(hdrs, Origin="https://shop.example"))
            resp = conn.getresponse()
            resp.read()
            names = [k.lower() for k, _ in resp.getheaders()]
            conn.close()
            assert resp.status in (202, 204), resp.status
            assert names.count("access-control-allow-origin") == 1, names
            assert names.count("vary") == 1, names
            assert resp.getheader("Access-Control-Allow-Origin") == "https://shop.example"
    # Open server without site keys: any key, no checks.
    with Server() as srv:
        status, body = srv.request("POST", "/v1/batch", {"batch": [track(1)]})
        assert status == 200, body


def test_segment_size_limits_and_bad_bodies():
    with Server(["--site", SITE]) as srv:
        h = basic("shop")
        big = track(1, properties={"url": "/big", "pad": "x" * (32 * 1024)})
        status, body = srv.request("POST", "/v1/batch", {"batch": [track(2), big]}, headers=h)
        assert status == 400 and "32 KB" in body["error"], (status, body)
        status, body = srv.request("POST", "/v1/track", big, headers=h)
        assert status == 400 and "32 KB" in body["error"], (status, body)
        msgs = [track(10 + i, properties={"url": "/b", "pad": "y" * (30 * 1024)}) for i in range(18)]
        status, body = srv.request("POST", "/v1/batch", {"batch": msgs}, headers=h)
        assert status == 400 and "500 KB" in body["error"], (status, body)
        for bad in ("not json", "[]", '{"batch": 3}', '{"batch": [{"event": "no type"}]}',
                    '{"batch": [{"type": "track", "event": "a\\u0000b", "userId": "u"}]}'):
            status, body = srv.request("POST", "/v1/batch", bad, headers=dict(h, **{"Content-Type": "application/json"}))
            assert status == 400 and body["error"], (bad, status, body)
        # A bad url (too long) or a bad userId rejects the whole request.
        status, body = srv.request("POST", "/v1/batch", {"batch": [track(3), track(4, properties={"url": "/" + "u" * 3000})]}, headers=h)
        assert status == 400 and "event 1" in body["error"] and "page_url" in body["error"], body
        status, body = srv.request("POST", "/v1/batch", {"batch": [track(5, userId=42)]}, headers=h)
        assert status == 400 and "user_id" in body["error"], body
        # Plausible: url required and a string; props an object or its JSON.
        for bad in ({"n": "pageview", "d": "shop"}, {"n": "pageview", "u": 42, "d": "shop"},
                    {"n": "pageview", "u": "/", "d": "shop", "p": "not json"}, {"u": "/", "d": "shop"}):
            status, body = srv.request("POST", "/api/event", bad)
            assert status == 400 and body["error"], (bad, status, body)
        status, body = srv.request("POST", "/api/send", {"type": "click", "payload": {"website": "shop"}})
        assert status == 400, body
        assert accepted(srv) == (0, 0)
        status, stats = srv.request("GET", "/api/v1/stats")
        assert stats["duplicates"] == 0


def test_ip_rate_limit():
    with Server(["--site", SITE, "--ingest-token", TOKEN, "--ip-rate", "2"]) as srv:
        # A request from a full bucket passes even above the burst (40 events
        # at 2/s), and leaves this IP in debt for about 19 s: no timing luck
        # is needed for what follows.
        status, body = srv.request("POST", "/v1/batch", {"batch": [track(i) for i in range(40)]},
                                   headers=basic("shop"))
        assert status == 200, body
        ev = json.dumps({"n": "pageview", "u": "https://shop.example/flood", "d": "shop"})
        for _ in range(3):
            status, hdrs, raw = srv.raw_request("POST", "/api/event", ev)
            assert status == 429, (status, raw)
            assert int(hdrs["retry-after"]) >= 10, hdrs
            assert "--ip-rate" in json.loads(raw)["error"]
        status, hdrs, raw = srv.raw_request("POST", "/v1/batch", json.dumps({"batch": [track(99)]}),
                                            headers=dict(basic("shop"), **{"Content-Type": "application/json"}))
        assert status == 429 and int(hdrs["retry-after"]) >= 10, (status, hdrs, raw)
        assert page_count(srv, "https://shop.example/flood") == (0, 0)
        assert accepted(srv) == (40, 0)
        # The ingest token is not limited.
        for i in range(10):
            status, _ = srv.request("POST", "/v1/track", track(100 + i), headers=AUTH)
            assert status == 200, status
        assert accepted(srv) == (50, 0)


def test_derived_visitor_ids():
    with Server(["--site", SITE]) as srv:
        ev = json.dumps({"n": "pageview", "u": "https://shop.example/v", "d": "shop"})
        for ua in ("UA-one", "UA-one", "UA-two"):
            status, _, raw = srv.raw_request("POST", "/api/event", ev, headers={"User-Agent": ua})
            assert status == 202, raw
        # Same (site, IP, User-Agent): one visitor; another User-Agent: another.
        assert page_count(srv, "https://shop.example/v") == (3, 2)
        # Segment's context.userAgent and context.ip name the browser a back
        # end relays: two anonymous-less events with different context.ip.
        msgs = [{"type": "page", "context": {"ip": ip, "userAgent": "UA-one", "page": {"url": "/w"}}}
                for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.2")]
        status, body = srv.request("POST", "/v1/batch", {"batch": msgs, "writeKey": "shop"})
        assert status == 200, body
        assert page_count(srv, "/w") == (3, 2)


def test_site_key_on_the_events_endpoint():
    """What the web tracker sends: POST /api/v1/events, text/plain, a "site"
    field (or ?site=), no user_id, no Authorization."""
    plain = {"Content-Type": "text/plain;charset=UTF-8"}
    with Server(["--site", SITE, "--ingest-token", TOKEN, "--ip-rate", "2"]) as srv:
        ev = {"name": "pageview", "page_url": "https://shop.example/t", "site": "shop",
              "referrer": "https://news.example/"}
        status, body = srv.request("POST", "/api/v1/events", json.dumps(ev),
                                   headers=dict(plain, Origin="https://shop.example"))
        assert status == 202 and body["accepted"] == 1 and body["rejected"] == 0, body
        # ?site= names the site of every event of the request.
        status, body = srv.request("POST", "/api/v1/events?site=shop", json.dumps([{"page_url": "/q"}]), headers=plain)
        assert status == 202 and body["accepted"] == 1, body
        assert page_count(srv, "https://shop.example/t") == (1, 1)
        assert page_count(srv, "/q") == (1, 1)
        # Refusals accept nothing: no key, an unknown key, one event of the
        # request without a key, a foreign Origin, NDJSON.
        for path, payload, hdrs, want in (
                ("/api/v1/events", {"page_url": "/r", "user_id": "u"}, plain, 401),
                ("/api/v1/events", dict(ev, site="nope"), plain, 401),
                ("/api/v1/events", [ev, {"page_url": "/r", "user_id": "u"}], plain, 401),
                ("/api/v1/events", ev, dict(plain, Origin="https://evil.example"), 403),
                ("/api/v1/events", ev, {"Content-Type": "application/x-ndjson"}, 415)):
            status, body = srv.request("POST", path, json.dumps(payload), headers=hdrs)
            assert status == want, (payload, hdrs, status, body)
        assert accepted(srv) == (2, 0)
        # The ingest token needs no site and is not rate limited; its site
        # events still get a derived user_id.
        status, body = srv.request("POST", "/api/v1/events", [dict(ev, page_url="/tok")] * 5, headers=AUTH)
        assert status == 202 and body["accepted"] == 5, body
        assert page_count(srv, "/tok") == (5, 1)
    # The per-IP rate: a large request passes from a full bucket, then 429.
    with Server(["--site", SITE, "--ip-rate", "2"]) as srv:
        ev = {"name": "pageview", "page_url": "/f", "site": "shop"}
        status, body = srv.request("POST", "/api/v1/events", json.dumps([ev] * 30), headers=plain)
        assert status == 202 and body["accepted"] == 30, body
        status, hdrs, raw = srv.raw_request("POST", "/api/v1/events", json.dumps(ev), headers=plain)
        assert status == 429 and int(hdrs["retry-after"]) >= 10, (status, hdrs, raw)
        # An open server: events without a site keep the usual rule.
        status, body = srv.request("POST", "/api/v1/events", {"page_url": "/n"})
        assert status == 202 and body["rejected"] == 1 and "user_id" in body["errors"][0]["error"], body
        assert accepted(srv) == (30, 0)


if __name__ == "__main__":
    run_tests([test_write_keys_and_answers, test_origin_checks_and_cors, test_segment_size_limits_and_bad_bodies,
               test_ip_rate_limit, test_derived_visitor_ids, test_site_key_on_the_events_endpoint])
