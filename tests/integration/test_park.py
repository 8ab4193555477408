"""--fsync always: a request whose events are logged but not yet durable is
parked (its connection suspended) instead of holding an HTTP thread, and is
answered 202 only once the fsync covered it (issue 15, docs/DESIGN.md
"Parked requests"). The log's writes are held with the test seam
CLICKFLOW_TEST_WAL_GATE (writes wait while the file exists)."""
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time

from harness import Server, run_tests


def parked(srv):
    st, _, text = srv.raw_request("GET", "/metrics", timeout=10.0)
    assert st == 200
    m = re.search(r"^clickflow_http_parked (\d+)$", text.decode(), re.M)
    assert m, "no clickflow_http_parked gauge"
    return int(m.group(1))


def wait_parked(srv, n, timeout=30.0):
    """Polls the gauge until n requests are parked (a wait for a state, not a
    timing assertion)."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = parked(srv)
        if seen == n:
            return
        time.sleep(0.02)
    raise AssertionError("parked %s, wanted %d" % (seen, n))


def event(i, tag):
    return {"user_id": "u%d" % i, "page_url": "/p%d" % (i % 3), "event_id": "%s-%d" % (tag, i)}


class Poster(threading.Thread):
    """One POST on its own connection; keeps the status (None: no answer)."""

    def __init__(self, srv, body, timeout=60.0):
        super().__init__(daemon=True)
        self.srv, self.body, self.timeout = srv, body, timeout
        self.status = self.answer = None

    def run(self):
        try:
            st, _, data = self.srv.raw_request("POST", "/api/v1/events", json.dumps(self.body),
                                               {"Content-Type": "application/json"}, timeout=self.timeout)
            self.status, self.answer = st, data
        except OSError:
            self.status = None


def accepted(srv):
    st, stats = srv.request("GET", "/api/v1/stats")
    assert st == 200
    return stats["accepted"]


@contextlib.contextmanager
def gated_server(extra=()):
    """A server (not started) under --fsync always with two HTTP threads whose
    log writes wait while `gate` exists; yields (srv, gate, its data dir) and
    removes the data dir afterwards."""
    tmp = tempfile.mkdtemp(prefix="clickflow-it-")
    try:
        gate = os.path.join(tmp, "gate")
        yield (Server(["--fsync", "always", "--http-threads", "2"] + list(extra),
                      env={"CLICKFLOW_TEST_WAL_GATE": gate}, data_dir=tmp), gate, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_waiting_requests_hold_no_thread_and_202_follows_durability():
    with gated_server() as (srv, gate, tmp):
        with srv:
            open(gate, "w").close()
            # Three times as many waiting requests as HTTP threads: without
            # parking the /metrics reads below could not be answered.
            posters = [Poster(srv, [event(i, "hold")]) for i in range(6)]
            for p in posters:
                p.start()
            wait_parked(srv, 6)
            st, _ = srv.request("GET", "/api/v1/stats", timeout=10.0)
            assert st == 200
            assert all(p.status is None for p in posters), "a 202 went out before the fsync"
            os.unlink(gate)
            for p in posters:
                p.join(30)
            assert [p.status for p in posters] == [202] * 6
            assert all(json.loads(p.answer)["accepted"] == 1 for p in posters)
            assert parked(srv) == 0
            assert accepted(srv) == 6


def metric(srv, name):
    st, _, text = srv.raw_request("GET", "/metrics", timeout=10.0)
    assert st == 200
    m = re.search(r"^%s (\d+)$" % name, text.decode(), re.M)
    assert m, "no %s" % name
    return int(m.group(1))


def test_rounds_are_group_commits():
    """clickflow_http_park_rounds_total counts the committer's rounds: a lone
    client's requests one round each; requests parked while a round's fsync
    was held share the next round (one fsync for the group)."""
    with gated_server() as (srv, gate, tmp):
        with srv:
            for i in range(5):
                st, body = srv.request("POST", "/api/v1/events", [event(i, "lone")])
                assert st == 202 and body["accepted"] == 1, body
            assert metric(srv, "clickflow_http_parked_total") == 5
            assert metric(srv, "clickflow_http_park_rounds_total") == 5
            open(gate, "w").close()
            posters = [Poster(srv, [event(i, "group")]) for i in range(6)]
            for p in posters:
                p.start()
            wait_parked(srv, 6)
            os.unlink(gate)
            for p in posters:
                p.join(30)
            assert [p.status for p in posters] == [202] * 6
            # The first round held at the gate took what was parked when it
            # began; everything parked during it went into one more round.
            assert metric(srv, "clickflow_http_park_rounds_total") - 5 <= 2
            assert metric(srv, "clickflow_http_parked_total") == 11


def test_deadline_while_parked_closes_without_answer_and_a_retry_is_a_duplicate():
    with gated_server(["--request-deadline", "1s"]) as (srv, gate, tmp):
        with srv:
            open(gate, "w").close()
            p = Poster(srv, [event(1, "late")])
            p.start()
            p.join(30)
            # Neither a 202 (not durable) nor a 503 (which says nothing was
            # accepted): the connection is closed, like a lost answer.
            assert not p.is_alive() and p.status is None, p.status
            assert parked(srv) == 0
            os.unlink(gate)
            # The event was logged: once durable, a retry is a duplicate.
            st, body = srv.request("POST", "/api/v1/events", [event(1, "late")])
            assert st == 202 and body["accepted"] == 0 and body["duplicates"] == 1, body
            assert accepted(srv) == 1


def test_client_disconnect_while_parked():
    with gated_server() as (srv, gate, tmp):
        with srv:
            open(gate, "w").close()
            body = json.dumps([event(1, "gone")]).encode()
            s = socket.create_connection(("127.0.0.1", srv.http_port))
            s.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            wait_parked(srv, 1)
            s.close()
            os.unlink(gate)
            wait_parked(srv, 0)
            # Logged and committed although nobody heard the 202; the
            # server serves on.
            st, answer = srv.request("POST", "/api/v1/events", [event(2, "gone")])
            assert st == 202 and answer["accepted"] == 1
            assert accepted(srv) == 2


def test_shutdown_with_parked_requests():
    with gated_server() as (srv, gate, tmp):
        srv.start()
        open(gate, "w").close()
        posters = [Poster(srv, [event(i, "stop")]) for i in range(4)]
        for p in posters:
            p.start()
        wait_parked(srv, 4)
        srv.proc.send_signal(signal.SIGTERM)
        # Still held: nobody may have been told 202.
        assert all(p.status is None for p in posters)
        os.unlink(gate)
        srv.proc.wait(30)
        code = srv.stop()
        for p in posters:
            p.join(30)
        assert code == 0, srv.read_log()[-2000:]
        # Answered 202 (durable) or cut off; never anything else.
        assert all(p.status in (202, None) for p in posters), [p.status for p in posters]
        srv2 = Server(data_dir=tmp).start()
        try:
            assert accepted(srv2) == 4   # all were logged and committed at stop
        finally:
            srv2.stop()


if __name__ == "__main__":
    run_tests([
        test_waiting_requests_hold_no_thread_and_202_follows_durability,
        test_rounds_are_group_commits,
        test_deadline_while_parked_closes_without_answer_and_a_retry_is_a_duplicate,
        test_client_disconnect_while_parked,
        test_shutdown_with_parked_requests,
    ])
