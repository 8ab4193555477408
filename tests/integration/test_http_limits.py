"""Connection hygiene: the absolute request deadline closes a client that
trickles its body, and the per-IP connection limit holds."""
import json
import os
import re
import socket
import tempfile
import time

from harness import Server, run_tests


def closed_by_server(s, budget):
    """Sends one body byte at a time, every 0.2 s (each resets an
    inactivity timer), until the server closes; returns True if it did
    within `budget` seconds (a bound, not a timing measurement)."""
    end = time.monotonic() + budget
    s.settimeout(0.2)
    while time.monotonic() < end:
        try:
            s.sendall(b" ")
        except OSError:
            return True
        try:
            if s.recv(4096) == b"":
                return True
        except socket.timeout:
            pass
        except OSError:
            return True
    return False


def test_request_deadline_closes_a_trickling_upload():
    with Server(["--request-deadline", "1s", "--connection-timeout", "5s"]) as srv:
        s = socket.create_connection(("127.0.0.1", srv.http_port))
        try:
            s.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n")
            # Without the deadline the 5 s inactivity timeout never fires.
            assert closed_by_server(s, 20.0), "connection still open long after the deadline"
        finally:
            s.close()
        assert srv.request("GET", "/healthz")[0] == 200


def test_request_deadline_closes_trickling_headers():
    """While headers trickle in, the HTTP library does not call the handler
    at all: the deadline must still hold."""
    with Server(["--request-deadline", "1s", "--connection-timeout", "5s"]) as srv:
        s = socket.create_connection(("127.0.0.1", srv.http_port))
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            assert closed_by_server(s, 20.0), "connection still open long after the deadline"
        finally:
            s.close()


def test_deadline_does_not_cut_idle_keep_alive_or_normal_requests():
    with Server(["--request-deadline", "1s", "--connection-timeout", "30s"]) as srv:
        s = socket.create_connection(("127.0.0.1", srv.http_port))
        s.settimeout(10.0)
        try:
            for _ in range(3):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
                time.sleep(1.5)   # idle longer than the request deadline, shorter than the idle timeout
        finally:
            s.close()


def test_per_ip_connection_limit():
    with Server(["--max-connections-per-ip", "2", "--max-connections", "10", "--http-threads", "1"]) as srv:
        held = []
        try:
            # Two connections the server has served (and so counted); the
            # harness's own probes may not be reaped yet, hence the retries.
            for _ in range(200):
                if len(held) == 2:
                    break
                s = socket.create_connection(("127.0.0.1", srv.http_port))
                s.settimeout(5.0)
                try:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    if s.recv(4096).startswith(b"HTTP/1.1 200"):
                        held.append(s)
                        continue
                except OSError:
                    pass
                s.close()
                time.sleep(0.05)   # waiting for the server to reap closed probes
            assert len(held) == 2
            refused = False
            try:
                st, _ = srv.request("GET", "/healthz", timeout=5.0)
            except OSError:
                refused = True
            assert refused, "a third connection from one IP was served"
        finally:
            for s in held:
                s.close()
        # Once they are gone, new connections are served again.
        for _ in range(200):
            try:
                if srv.request("GET", "/healthz", timeout=5.0)[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)   # waiting for the server to notice the closes
        else:
            raise AssertionError("server did not accept connections again")


def test_request_head_limit():
    """libmicrohttpd zeroes a connection's memory after every request, so
    its size is paid per request (server/http.c): it is twice
    --max-request-head (7424 bytes by default) plus 1.5 KiB. A head over
    the limit (a large cookie) gets a JSON 431 that names the option, and
    the server keeps serving; with the option lowered (3328), a smaller
    head is refused the same way."""
    body = b'{"user_id": "u1", "page_url": "/p"}'
    hdrs = {"Content-Type": "application/json"}
    with Server() as srv:
        st, _, data = srv.raw_request("POST", "/api/v1/events", body, dict(hdrs, Cookie="c=" + "x" * 7000))
        assert st == 202, (st, data)
        st, _, data = srv.raw_request("POST", "/api/v1/events", body, dict(hdrs, Cookie="c=" + "x" * 7600))
        assert st == 431, (st, data)
        assert "--max-request-head" in json.loads(data)["error"], data
        assert srv.request("GET", "/healthz")[0] == 200
        st, _, data = srv.raw_request("POST", "/api/v1/events", body, dict(hdrs, Cookie="c=" + "x" * 7000))
        assert st == 202, (st, data)
    with Server(["--max-request-head", "3328"]) as srv:
        st, _, data = srv.raw_request("POST", "/api/v1/events", body, dict(hdrs, Cookie="c=" + "x" * 2800))
        assert st == 202, (st, data)
        st, _, data = srv.raw_request("POST", "/api/v1/events", body, dict(hdrs, Cookie="c=" + "x" * 3400))
        assert st == 431, (st, data)
        assert srv.request("GET", "/healthz")[0] == 200


def _raw_post_with_head(port, head_len, event_id, origin, extra=b""):
    """One POST whose head is exactly head_len bytes (a Cookie pads it,
    after the header lines in extra); returns the raw bytes received until
    the server closes or answers."""
    body = json.dumps({"user_id": "u", "page_url": "/p", "event_id": event_id}).encode()
    head = (b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n" % len(body)) + extra
    if origin:
        head += b"Origin: http://example.com\r\n"
    head += b"Cookie: c=" + b"x" * (head_len - len(head) - len(b"Cookie: c=\r\n\r\n")) + b"\r\n\r\n"
    assert len(head) == head_len
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10.0)
    data = b""
    try:
        s.sendall(head + body)
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"content-length: *(\d+)", data[:end].lower())
                if m and len(data) >= end + 4 + int(m.group(1)):
                    break
    except OSError:
        pass   # reset: no answer, like a close
    finally:
        s.close()
    return data


def _no_event_unanswered_near(limit, mhd_edge, refused, served):
    """Heads just under libmicrohttpd's own 431 (at about mhd_edge) fit its
    connection memory, but the answer's headers then do not: the event
    was accepted and the connection closed without a word, so the client
    could only retry blindly. Heads over --max-request-head (limit) are
    refused by us (JSON 431) before the body is read (its bytes plus 32
    per header, cookie or query argument count); every 202 is an accepted
    event and every accepted event had its 202."""
    args = ["--cors-origin", "http://example.com"] + (["--max-request-head", str(limit)] if limit else [])
    with Server(args) as srv:
        answered = 0
        for origin in (False, True):
            for n in range(mhd_edge - 150, mhd_edge + 150, 3):
                data = _raw_post_with_head(srv.http_port, n, "e%d-%d" % (n, origin), origin)
                if data.startswith(b"HTTP/1.1 202"):
                    answered += 1
                elif data:
                    assert data.startswith(b"HTTP/1.1 431"), data[:200]
        # Each header (and cookie) also takes a record in that memory: many
        # small ones reach the same point with far fewer bytes.
        for nh in (25, 100, 200):
            extra = b"".join(b"X%d: v\r\n" % i for i in range(nh))
            for n in range(1800, mhd_edge + 150, 53):
                if n < len(extra) + 200:
                    continue
                data = _raw_post_with_head(srv.http_port, n, "h%d-%d" % (nh, n), False, extra)
                if data.startswith(b"HTTP/1.1 202"):
                    answered += 1
                elif data:
                    assert data.startswith(b"HTTP/1.1 431"), data[:200]
        st, text = srv.request("GET", "/metrics")
        accepted = int(re.search(r"^clickflow_events_accepted_total (\d+)$", text, re.M).group(1))
        assert accepted == answered, (accepted, answered)
        # Our own refusal is a JSON error; a head under the limit is served.
        data = _raw_post_with_head(srv.http_port, refused, "big", False)
        assert data.startswith(b"HTTP/1.1 431"), data[:200]
        assert "too large" in json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]
        assert _raw_post_with_head(srv.http_port, served, "edge", True).startswith(b"HTTP/1.1 202")


def test_no_event_is_accepted_without_an_answer_near_the_head_limit():
    """The default --max-request-head 7424 (16 KiB of connection memory)."""
    _no_event_unanswered_near(None, 7950, 7300, 7168)


def test_no_event_is_accepted_without_an_answer_near_a_lowered_head_limit():
    """--max-request-head 3328 (8 KiB of connection memory)."""
    _no_event_unanswered_near(3328, 3950, 3250, 3072)


def test_a_network_error_on_accept_does_not_stop_accepting():
    """Linux's accept reports a new connection's pending network error
    (EPROTO, ENETUNREACH, ...) as its own failure; the accept thread took
    any error but a few as fatal and never accepted again, so one client's
    bad network left the server up but deaf. The shim (accept_fault.c)
    injects one such error."""
    trigger = os.path.join(tempfile.mkdtemp(prefix="clickflow-it-"), "fault")
    env = {"LD_PRELOAD": os.environ["CF_TEST_ACCEPT_FAULT_SO"], "CF_TEST_ACCEPT_FAULT": trigger,
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    with Server(["--http-threads", "2"], env=env) as srv:
        open(trigger, "w").close()
        s = socket.create_connection(("127.0.0.1", srv.http_port))
        s.settimeout(10.0)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096) == b""   # the faulted connection is closed
        except ConnectionResetError:
            pass
        finally:
            s.close()
        assert not os.path.exists(trigger), "the fault was not injected"
        for _ in range(3):
            assert srv.request("GET", "/healthz", timeout=10.0)[0] == 200
        assert "no more connections are accepted" not in srv.read_log()


if __name__ == "__main__":
    run_tests([test_request_deadline_closes_a_trickling_upload, test_request_deadline_closes_trickling_headers,
               test_deadline_does_not_cut_idle_keep_alive_or_normal_requests,
               test_per_ip_connection_limit, test_request_head_limit,
               test_no_event_is_accepted_without_an_answer_near_the_head_limit,
               test_no_event_is_accepted_without_an_answer_near_a_lowered_head_limit,
               test_a_network_error_on_accept_does_not_stop_accepting])
