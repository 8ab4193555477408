"""Numbers come back exactly as computed or sent (docs/FORMATS.md, "Numbers"):
a view's SUM, AVG and MAX of DOUBLEs and an UNNEST-ed DOUBLE element read
back as the very doubles Python computes in the same order (they printed
with 15 significant digits: 0.1 + 0.2 came back as 0.3), in pull queries and
in the WebSocket push; clicks' and Segment track `properties` keep
9007199254740991 and 0.30000000000000004 (cJSON's own printer wrote them as
9.00719925474099e+15 and 0.3)."""
import json
import math
import struct

from harness import Server, run_tests
from ws_client import WsClient

BASE = 1767225600000
ARGS = ["--idle-timeout", "0", "--shards", "1", "--snapshot-interval", "1h"]
SCHEMA = ("CREATE STREAM m (id STRING NOT NULL, x DOUBLE, xs ARRAY<DOUBLE>, ts TIMESTAMP) "
          "WITH (TIMESTAMP = 'ts', EVENT_ID = 'id');"
          "CREATE VIEW totals AS SELECT COUNT(*) AS n, SUM(x) AS s, AVG(x) AS a, MAX(x) AS mx FROM m;"
          "CREATE STREAM elems AS SELECT id, e FROM m CROSS JOIN UNNEST(xs) AS e;"
          "CREATE VIEW by_elem AS SELECT e, COUNT(*) AS n FROM elems GROUP BY e")
# Doubles whose 15-digit text is not themselves.
XS = [0.1, 0.2, 1 / 3, 2 / 3, 1e300, -1e300, 9007199254740991.0, 0.30000000000000004,
      123456.78901234567, 5e-324, -0.0, 1.7976931348623157e308 / 3]
HARD = {"big": 9007199254740991, "x": 0.30000000000000004, "third": 1 / 3,
        "nested": [1e300, {"y": 2 / 3}]}


def bits(d):
    return struct.pack("<d", d)


def sql(srv, text):
    st, body = srv.request("POST", "/api/v1/sql", text, {"Content-Type": "application/sql"})
    assert st == 200, (st, body)


def query(srv, text):
    st, body = srv.request("POST", "/api/v1/query", {"sql": text})
    assert st == 200, (st, body)
    return body["items"]


def test_view_doubles_and_unnest_elements_round_trip():
    with Server(ARGS) as srv:
        sql(srv, SCHEMA)
        info = srv.request("GET", "/api/v1/info")[1]
        with WsClient(srv.ws_port, info["ws_path"]) as ws:
            ws.send_json({"subscribe": ["view:totals"]})
            assert ws.recv_json()["type"] == "subscribed"
            evs = [{"id": "e%d" % i, "x": x, "xs": [x, XS[(i + 1) % len(XS)]], "ts": BASE + i}
                   for i, x in enumerate(XS)]
            st, body = srv.request("POST", "/api/v1/streams/m/events", evs)
            assert st == 202, body
            # The reference: the same additions in the same (log) order.
            s = 0.0
            for x in XS:
                s += x
            want = {"n": len(XS), "s": s, "a": s / len(XS), "mx": max(XS)}
            assert not math.isinf(s)
            row = query(srv, "SELECT n, s, a, mx FROM totals")[0]
            assert row == want and bits(row["s"]) == bits(s), (row, want)
            # The push carries the same text as the pull.
            pushed = None
            while pushed is None or pushed["n"] < len(XS):
                msg = ws.recv_json()
                if msg.get("type") == "view":
                    pushed = msg["data"][-1]
            assert {k: pushed[k] for k in want} == want, pushed
        # Every element, grouped by its exact value (a group key -0.0 is
        # the group 0: they compare equal).
        got = {bits(r["e"]): r["n"] for r in query(srv, "SELECT e, n FROM by_elem")}
        want_n = {}
        for ev in evs:
            for e in ev["xs"]:
                k = bits(e + 0.0)
                want_n[k] = want_n.get(k, 0) + 1
        assert got == want_n, (got, want_n)


def test_properties_keep_their_numbers():
    with Server(ARGS + ["--site", "shop=https://shop.example"]) as srv:
        sql(srv, "CREATE STREAM props AS SELECT user_id, properties FROM clicks")
        st, body = srv.request("POST", "/api/v1/events", [
            {"user_id": "native", "page_url": "/p", "timestamp": BASE, "event_id": "n1",
             "properties": HARD}])
        assert st == 202, body
        msg = {"type": "track", "event": "e", "userId": "segment", "messageId": "s1",
               "timestamp": "2026-01-01T00:00:01Z", "properties": dict(HARD, url="/s")}
        st, body = srv.request("POST", "/v1/batch", {"batch": [msg], "writeKey": "shop"})
        assert st == 200, body
        rows = {r["user_id"]: r["properties"] for r in query(srv, "SELECT user_id, properties FROM props")}
        assert set(rows) == {"native", "segment"}, rows
        for who, props in rows.items():
            props = json.loads(props) if isinstance(props, str) else props
            for k, v in HARD.items():
                assert props[k] == v, (who, k, props)


def test_unnest_of_a_json_array_keeps_its_numbers():
    # Elements of an array inside a JSON column are JSON values: objects,
    # arrays and numbers in them print exactly too.
    elems = [9007199254740991, 0.30000000000000004, [1 / 3], {"y": 2 / 3}]
    with Server(ARGS) as srv:
        sql(srv, "CREATE STREAM j (id STRING NOT NULL, meta JSON, ts TIMESTAMP) "
                 "WITH (TIMESTAMP = 'ts', EVENT_ID = 'id');"
                 "CREATE STREAM jel AS SELECT id, e FROM j CROSS JOIN UNNEST(meta.xs) AS e;")
        st, body = srv.request("POST", "/api/v1/streams/j/events",
                               [{"id": "j1", "meta": {"xs": elems}, "ts": BASE}])
        assert st == 202, body
        got = [r["e"] for r in query(srv, "SELECT e FROM jel")]
        assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, elems)), got
        # And in the shortest text that reads back (cJSON's printer gave
        # 17 digits, 0.33333333333333331, for what Python and we print as
        # 0.3333333333333333).
        st, _, raw = srv.raw_request("POST", "/api/v1/query", json.dumps({"sql": "SELECT e FROM jel"}),
                                     {"Content-Type": "application/json"})
        assert st == 200, raw
        text = raw.decode() if isinstance(raw, bytes) else raw
        for e in elems:
            assert json.dumps(e, separators=(",", ":")) in text.replace(", ", ","), (e, text)


def test_properties_numbers_beyond_a_double_are_refused():
    """1e400 is valid JSON that no double holds (cJSON reads an infinity):
    the event was accepted with the value turned into null. Now it is
    rejected with its reason, natively and through Segment; numbers that
    only lose digits (beyond 2^53, below the smallest double) still pass."""
    with Server(ARGS + ["--site", "shop=https://shop.example"]) as srv:
        sql(srv, "CREATE STREAM props AS SELECT user_id, properties FROM clicks")
        raw = ('[{"user_id":"big","page_url":"/p","timestamp":%d,"event_id":"i1","properties":{"v":[1e400]}},'
               '{"user_id":"ok","page_url":"/p","timestamp":%d,"event_id":"i2",'
               '"properties":{"v":18446744073709551616,"t":1e-400}}]' % (BASE, BASE))
        st, _, data = srv.raw_request("POST", "/api/v1/events", raw.encode(), {"Content-Type": "application/json"})
        body = json.loads(data)
        assert st == 202 and body["accepted"] == 1 and body["rejected"] == 1, body
        assert "beyond the range of a double" in body["errors"][0]["error"], body
        seg = ('{"batch":[{"type":"track","event":"e","userId":"seg","messageId":"s1",'
               '"timestamp":"2026-01-01T00:00:01Z","properties":{"url":"/s","v":-1e999}}],"writeKey":"shop"}')
        st, _, data = srv.raw_request("POST", "/v1/batch", seg.encode(), {"Content-Type": "application/json"})
        assert st == 400 and b"beyond the range of a double" in data, (st, data)
        rows = {r["user_id"]: r["properties"] for r in query(srv, "SELECT user_id, properties FROM props")}
        assert set(rows) == {"ok"}, rows
        props = json.loads(rows["ok"]) if isinstance(rows["ok"], str) else rows["ok"]
        assert props == {"v": 18446744073709551616, "t": 0}, props


if __name__ == "__main__":
    run_tests([test_view_doubles_and_unnest_elements_round_trip, test_properties_keep_their_numbers,
               test_unnest_of_a_json_array_keeps_its_numbers,
               test_properties_numbers_beyond_a_double_are_refused])
