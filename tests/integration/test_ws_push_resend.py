"""Integration test of the interim push after a dropped message (SPEC 9,
docs/API.md "WebSocket"): interim windows go out only when they changed, so
a slow client whose queue lost the last one used to keep a stale list on an
idle server until the list changed again. The server now resends the current
list to a client that lost it. Waits are on messages and counters, never
on the clock."""
import time

from harness import Server, run_tests
from test_ws_push import BASE, info_ws, subscribe
from ws_client import WsClient

QUEUE = 2           # --ws-queue: a queue of two messages is overrun at once
LAST_COUNT = 500    # clicks of the last page: the top of the final interim list


def stats(srv):
    status, body = srv.request("GET", "/api/v1/stats")
    assert status == 200, (status, body)
    return body


def open_count(srv, page):
    status, body = srv.request("GET", "/api/v1/windows?type=tumbling&state=open&page_url=" + page)
    assert status == 200, (status, body)
    return sum(r["count"] for r in body["items"])


def last_count(msg):
    """The tumbling count of /last in a windows message, or None."""
    rows = [r for r in msg["data"] if r["type"] == "tumbling" and r["page_url"] == "/last"]
    return rows[0]["count"] if rows else None


def test_lost_interim_windows_are_sent_again():
    with Server(["--idle-timeout", "0", "--ws-queue", str(QUEUE), "--push-interval", "50ms"]) as srv:
        path = info_ws(srv)
        # A tiny receive buffer: the server's socket fills after a few lists.
        slow = WsClient(srv.ws_port, path, rcvbuf=4096)
        try:
            assert subscribe(slow, ["windows", "stats"]) == ["windows", "stats"]
            # From here the client reads nothing. Changing lists of long page
            # names fill its socket, then its queue, until messages are dropped.
            pad = "x" * 200
            deadline = time.monotonic() + 60
            round_ = 0
            # Several drops, so that the socket and the write libwebsockets
            # holds back are surely full of older lists.
            while stats(srv)["ws_dropped"] < 3 * QUEUE:
                assert time.monotonic() < deadline, "the slow client's queue never overflowed"
                events = [{"user_id": "u%d" % round_, "page_url": "/fill/%03d/%s" % (i, pad),
                           "timestamp": BASE + 10000} for i in range(150)]
                status, _ = srv.request("POST", "/api/v1/events", events)
                assert status == 202, status
                round_ += 1
                time.sleep(0.05)    # pacing: about one changed list per push interval
            # The last change: /last tops the list. Once the windows hold
            # it, the next push tick offers that list to the full queue.
            events = [{"user_id": "l%d" % i, "page_url": "/last", "timestamp": BASE + 10000}
                      for i in range(LAST_COUNT)]
            status, _ = srv.request("POST", "/api/v1/events", events)
            assert status == 202, status
            deadline = time.monotonic() + 30
            while open_count(srv, "/last") != LAST_COUNT:
                assert time.monotonic() < deadline, "the last events were never counted"
                time.sleep(0.02)    # poll pacing only
            # Idle now. Stats (interim, every second) evict the oldest interim
            # message: after QUEUE + 2 more drops the last list has been
            # offered and pushed out of the queue (drops counted, not timed).
            dropped = stats(srv)["ws_dropped"]
            deadline = time.monotonic() + 30
            while stats(srv)["ws_dropped"] < dropped + QUEUE + 2:
                assert time.monotonic() < deadline, "no further drops"
                time.sleep(0.05)    # poll pacing only
            # The client reads again. Whatever it had queued comes first; the
            # current list must follow within a few stats messages (seconds,
            # i.e. tens of push intervals), though nothing changed since.
            stats_after = 0
            seen = []
            while True:
                msg = slow.recv_json(timeout=10)
                if msg["type"] == "windows":
                    seen.append(last_count(msg))
                    if seen[-1] == LAST_COUNT:
                        break
                stats_after += msg["type"] == "stats"
                assert stats_after <= QUEUE + 3, \
                    "no current windows list after %d stats; /last counts seen: %s" % (stats_after, seen)
        finally:
            slow.close()


if __name__ == "__main__":
    run_tests([
        test_lost_interim_windows_are_sent_again,
    ])
