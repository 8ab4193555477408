"""Integration tests of the WebSocket push (SPEC 9) against the real binary:
the final window results a subscribed client receives equal the REST ones,
subscribe filtering and the handshake checks, and a client that never reads
does not stop another client from receiving stats every second while 100k
events are ingested. Waits use deadlines on conditions, never sleeps."""
import json
import time

from harness import Server, run_tests
from ws_client import Closed, HandshakeError, WsClient

BASE = 1795514400000  # 2026-11-24T10:00:00Z
MIN = 60000


def info_ws(srv, headers=None):
    status, info = srv.request("GET", "/api/v1/info", headers=headers)
    assert status == 200, (status, info)
    assert info["ws_port"] == srv.ws_port, info
    assert info["ws_path"].startswith("/"), info
    return info["ws_path"]


TOPICS_ORDER = ["windows", "trending", "sessions", "stats", "late"]


def subscribe(ws, topics):
    ws.send_json({"subscribe": topics})
    # The hub confirms a subscription with a "subscribed" message; other
    # messages queued before it are skipped here.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = ws.recv_json(timeout=deadline - time.monotonic())
        if msg.get("type") == "subscribed":
            assert msg["data"] == sorted(msg["data"], key=TOPICS_ORDER.index), msg
            return msg["data"]
    raise AssertionError("no subscription confirmation")


def key(r):
    return (r["type"], r["start"], r["page_url"])


def test_final_windows_equal_rest():
    # Events arrive out of order across two requests; the lateness allowance
    # keeps them all, so some windows fire again (revision 1).
    with Server(["--idle-timeout", "0", "--push-interval", "100ms", "--allowed-lateness", "1h"]) as srv:
        path = info_ws(srv)
        with WsClient(srv.ws_port, path) as ws:
            assert subscribe(ws, ["windows"]) == ["windows"]
            pages = ["/", "/products/7", "/cart", "/a b?c=\"d\"", "/\u00e9t\u00e9"]
            events = []
            for i in range(600):
                events.append({
                    "user_id": "u%d" % (i % 37),
                    "page_url": pages[i % len(pages)] if i % 3 else pages[0],
                    "timestamp": BASE + (i * 997) % (3 * MIN),   # three tumbling windows, out of order
                    "event_id": "e%d" % i,
                })
            status, body = srv.request("POST", "/api/v1/events", events[:300])
            assert status == 202 and body["accepted"] == 300, (status, body)
            status, body = srv.request("POST", "/api/v1/events", events[300:])
            assert status == 202 and body["accepted"] == 300, (status, body)
            # Fire every window: tumbling ones end by 10:03, sliding (5m) by 10:07.
            status, body = srv.request("POST", "/api/v1/watermark", {"watermark": BASE + 20 * MIN})
            assert status == 200, (status, body)
            status, stats = srv.request("GET", "/api/v1/stats")
            assert stats["accepted"] == 600 and stats["late_dropped"] == 0, stats

            status, rest = srv.request("GET", "/api/v1/windows?state=closed&limit=100000")
            assert status == 200, (status, rest)
            want = {key(r): r for r in rest["items"] if r["final"]}
            assert want, rest
            tumbling = {k for k in want if k[0] == "tumbling"}
            assert len(tumbling) == 3 * len(pages), sorted(tumbling)
            assert sum(want[k]["count"] for k in tumbling) == 600

            # The newest final result per window and page, in arrival order,
            # must end up equal to REST's (revisions included).
            got = {}
            deadline = time.monotonic() + 20
            while any(got.get(k) != r for k, r in want.items()) and time.monotonic() < deadline:
                msg = ws.recv_json(timeout=max(0.1, deadline - time.monotonic()))
                assert msg["type"] == "windows", msg["type"]
                assert isinstance(msg["data"], list)
                for r in msg["data"]:
                    if r["final"]:
                        got[key(r)] = r
            missing = set(want) - set(got)
            assert not missing, "final results not pushed: %s" % sorted(missing)[:5]
            for k, r in want.items():
                assert got[k] == r, (k, got[k], r)


def test_subscribe_filters_and_handshake_checks():
    with Server(["--idle-timeout", "0", "--read-token", "rt0k"]) as srv:
        path = info_ws(srv, {"Authorization": "Bearer rt0k"})
        for bad in ({}, {"Authorization": "Bearer nope"}):
            try:
                WsClient(srv.ws_port, path, headers=bad).close()
                raise AssertionError("connected without the read token")
            except HandshakeError:
                pass
        try:
            WsClient(srv.ws_port, path + "?token=rt0k", headers={"Origin": "http://evil.example"}).close()
            raise AssertionError("connected from a foreign origin")
        except HandshakeError:
            pass
        same_host = {"Origin": "http://127.0.0.1:%d" % srv.http_port}
        with WsClient(srv.ws_port, path + "?token=rt0k", headers=same_host) as stats_only, \
                WsClient(srv.ws_port, path, headers={"Authorization": "Bearer rt0k"}) as windows_only:
            assert subscribe(stats_only, ["stats"]) == ["stats"]
            assert subscribe(windows_only, ["windows"]) == ["windows"]
            status, _ = srv.request("POST", "/api/v1/events",
                                    [{"user_id": "u1", "page_url": "/x", "timestamp": BASE}])
            assert status == 202
            for _ in range(3):
                assert stats_only.recv_json(timeout=5)["type"] == "stats"
            assert windows_only.recv_json(timeout=5)["type"] == "windows"
            # A malformed client message closes with 1008 (policy violation).
            windows_only.send_text("this is not json")
            deadline = time.monotonic() + 5
            try:
                while time.monotonic() < deadline:
                    windows_only.recv(timeout=5)
                raise AssertionError("not closed")
            except Closed as c:
                assert c.code == 1008, c.code


def test_slow_client_does_not_stop_stats():
    # A short push interval makes many interim window messages, so the
    # client that never reads is overrun (and its drops counted) quickly.
    with Server(["--idle-timeout", "0", "--ws-queue", "16", "--push-interval", "50ms"]) as srv:
        path = info_ws(srv)
        # Subscribed to everything and never reading, with a tiny receive buffer.
        stuck = WsClient(srv.ws_port, path, rcvbuf=4096)
        with WsClient(srv.ws_port, path) as reader:
            assert subscribe(reader, ["stats"]) == ["stats"]
            stamps = []
            accepted_seen = 0

            def read_stats(until):
                nonlocal accepted_seen
                while time.monotonic() < until:
                    try:
                        msg = reader.recv_json(timeout=max(0.01, until - time.monotonic()))
                    except TimeoutError:
                        return
                    assert msg["type"] == "stats", msg["type"]
                    stamps.append(time.monotonic())
                    accepted_seen = max(accepted_seen, msg["data"]["accepted"])

            total = 100000
            batch = 2000
            pages = ["/p/%d" % i for i in range(500)]
            t0 = time.monotonic()
            for b in range(total // batch):
                events = [{"user_id": "u%d" % (i % 997), "page_url": pages[(i * 7919) % len(pages)],
                           "timestamp": BASE + i * 10, "event_id": "s%d" % i}
                          for i in range(b * batch, (b + 1) * batch)]
                body = json.dumps(events)
                for _ in range(200):
                    status, answer = srv.request("POST", "/api/v1/events", body,
                                                 headers={"Content-Type": "application/json"})
                    if status != 503:
                        break
                    read_stats(time.monotonic() + 0.05)  # back off while reading
                assert status == 202 and answer["accepted"] == batch, (status, answer)
                # Spread the ingest over a few seconds, reading stats meanwhile.
                read_stats(time.monotonic() + 0.06)
            t1 = time.monotonic()
            # Keep reading until the stats show every event, and a bit more.
            deadline = time.monotonic() + 30
            while accepted_seen < total and time.monotonic() < deadline:
                read_stats(time.monotonic() + 0.5)
            read_stats(time.monotonic() + 1.5)
            assert accepted_seen == total, accepted_seen
            # Stats kept coming while ingesting and the silent client's
            # queue filled: a push thread stalled on that client would stop
            # them (and accepted_seen would never reach the total above).
            # Counted, not timed: a loaded machine may delay a tick.
            during = [t for t in stamps if t0 <= t <= t1]
            assert len(during) >= 2, (len(during), t1 - t0)
            status, stats = srv.request("GET", "/api/v1/stats")
            assert status == 200 and stats["ws_clients"] == 2, stats
            # The stuck client really was overrun: messages were dropped for it.
            assert stats["ws_dropped"] > 0, stats
        stuck.sock.close()


def test_interim_windows_only_when_changed():
    # The interim windows (a top-N snapshot) go out when they changed, or
    # when a client joins; an idle server does not send the same snapshot
    # every --push-interval. Stats (every second) count the time, so the
    # test waits for messages, not for the clock.
    with Server(["--idle-timeout", "0", "--push-interval", "100ms"]) as srv:
        path = info_ws(srv)
        events = [{"user_id": "u%d" % i, "page_url": "/p%d" % (i % 3), "timestamp": BASE + 10000}
                  for i in range(30)]
        status, _ = srv.request("POST", "/api/v1/events", events)
        assert status == 202

        def until_windows(ws, deadline=10):
            end = time.monotonic() + deadline
            while time.monotonic() < end:
                msg = ws.recv_json(timeout=max(0.1, end - time.monotonic()))
                if msg["type"] == "windows":
                    return msg
            raise AssertionError("no windows message")

        def windows_between_stats(ws, n_stats):
            """Windows messages seen until n_stats stats messages arrived."""
            seen = stats = 0
            while stats < n_stats:
                msg = ws.recv_json(timeout=10)
                stats += msg["type"] == "stats"
                seen += msg["type"] == "windows"
            return seen

        with WsClient(srv.ws_port, path) as a:
            assert subscribe(a, ["windows", "stats"]) == ["windows", "stats"]
            first = until_windows(a)
            assert {r["page_url"]: r["count"] for r in first["data"] if r["type"] == "tumbling"} == \
                {"/p0": 10, "/p1": 10, "/p2": 10}, first
            # The join's push may come twice (connect, then subscribe): let
            # them pass, then at least two seconds (20 intervals) of nothing new.
            windows_between_stats(a, 2)
            assert windows_between_stats(a, 2) == 0
            # A change goes out.
            status, _ = srv.request("POST", "/api/v1/events",
                                    [{"user_id": "x", "page_url": "/p0", "timestamp": BASE + 10000}])
            assert status == 202
            changed = until_windows(a)
            assert {r["page_url"]: r["count"] for r in changed["data"]
                    if r["type"] == "tumbling"}["/p0"] == 11, changed
            # A new subscriber gets the snapshot without waiting for a change.
            with WsClient(srv.ws_port, path) as b:
                assert subscribe(b, ["windows"]) == ["windows"]
                assert until_windows(b)["data"] == changed["data"]


def test_interim_windows_are_the_busiest():
    # More open windows than the interim push carries (100 per type), with
    # ties in count at the cut: the push carries exactly the busiest, ties
    # broken by page bytes, in that order (the shards pick them with a
    # bounded heap instead of sorting every window). One shard, so that the
    # shard's own cut is the answer's: with more, each holds fewer pages.
    with Server(["--idle-timeout", "0", "--push-interval", "100ms", "--shards", "1"]) as srv:
        path = info_ws(srv)
        pages = ["/q/%03d" % i for i in range(250)]
        counts = {p: 1 + (i * 5) % 7 for i, p in enumerate(pages)}
        events = [{"user_id": "u%d" % j, "page_url": p, "timestamp": BASE + 10000}
                  for p in pages for j in range(counts[p])]
        status, _ = srv.request("POST", "/api/v1/events", events)
        assert status == 202
        want = sorted(pages, key=lambda p: (-counts[p], p.encode()))[:100]
        with WsClient(srv.ws_port, path) as ws:
            assert subscribe(ws, ["windows"]) == ["windows"]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                msg = ws.recv_json(timeout=max(0.1, deadline - time.monotonic()))
                if msg["type"] != "windows":
                    continue
                rows = [r for r in msg["data"] if r["type"] == "tumbling"]
                if sum(r["count"] for r in rows) < sum(counts[p] for p in want):
                    continue  # a push from before every event was counted
                assert [r["page_url"] for r in rows] == want, rows
                assert [r["count"] for r in rows] == [counts[p] for p in want], rows
                assert all(not r["final"] for r in rows), rows
                return
            raise AssertionError("no complete windows message")


if __name__ == "__main__":
    run_tests([
        test_final_windows_equal_rest,
        test_subscribe_filters_and_handshake_checks,
        test_slow_client_does_not_stop_stats,
        test_interim_windows_only_when_changed,
        test_interim_windows_are_the_busiest,
    ])
