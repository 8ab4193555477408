"""Hardening of the HTTP front (issue 10): body budgets per client address,
stalled bodies and slow headers cut, a full connection table sheds its
slowest openers, request framing that could smuggle a request is refused,
NUL and control bytes in URLs are refused, and the connection limits fit the
open-file limit. Client addresses other than 127.0.0.1 come from the rest of
127.0.0.0/8, which Linux routes to loopback."""
import json
import os
import socket
import stat
import time

from harness import Server, run_tests


def metrics(srv):
    """The /metrics samples without labels, as floats."""
    status, text = srv.request("GET", "/metrics")
    assert status == 200, status
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_for(cond, what, timeout=15.0):
    """Polls cond() until it is true; fails after timeout (a bound, not a
    timing measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)  # polling the server's own counters
    raise AssertionError("timed out waiting for " + what)


def connect(srv, source="127.0.0.1", timeout=10.0):
    s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=timeout,
                                 source_address=(source, 0))
    return s


def read_until_closed(s, timeout):
    """Reads until the server closes; returns (everything read, closed?)."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except socket.timeout:
        return data, False
    except OSError:
        return data, True


def post_head(length, ctype="application/json"):
    return ("POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (ctype, length)).encode()


def events_body(n, pad=0):
    return json.dumps([{"user_id": "u%d" % i, "page_url": "/p/%d%s" % (i, "x" * pad)} for i in range(n)]).encode()


def test_one_address_cannot_take_the_whole_body_budget():
    """Found: 64 connections from one address, each declaring 4 MiB and
    sending one byte, reserved the whole budget. Now the budget is taken as
    bytes arrive and one address holds at most --body-budget-per-ip."""
    with Server(["--max-body", "64k", "--body-budget", "1M", "--body-budget-per-ip", "256k",
                 "--body-stall-timeout", "60s", "--connection-timeout", "60s"]) as srv:
        held = []
        try:
            # Declared lengths alone reserve nothing.
            for _ in range(20):
                s = connect(srv, "127.0.0.2")
                s.sendall(post_head(65536) + b"[")
                held.append(s)
            m = wait_for(lambda: (lambda m: m if m["clickflow_http_body_bytes_in_flight"] == 20 else None)(
                metrics(srv)), "20 one-byte bodies in flight")
            assert m["clickflow_http_body_budget_refused_total"] == 0, m
            # Now each sends 60000 bytes more: 1.2 MB from one address.
            for s in held:
                before = metrics(srv)
                s.sendall(b" " * 60000)
                wait_for(lambda: (lambda m: m["clickflow_http_body_bytes_in_flight"]
                                  >= before["clickflow_http_body_bytes_in_flight"] + 60000
                                  or m["clickflow_http_body_budget_refused_total"]
                                  > before["clickflow_http_body_budget_refused_total"])(metrics(srv)),
                         "the body bytes to be taken or refused")
            m = metrics(srv)
            assert m["clickflow_http_body_bytes_in_flight"] <= 256 * 1024, m
            assert m["clickflow_http_body_budget_refused_total"] >= 10, m
            # Another address still gets its (50 KB) request through.
            body = events_body(300, pad=120)
            assert 40000 < len(body) < 65536, len(body)
            s = connect(srv, "127.0.0.1")
            s.sendall(post_head(len(body)) + body)
            reply = s.recv(65536)
            s.close()
            assert reply.startswith(b"HTTP/1.1 202"), reply[:200]
            # An attacker connection that finishes its body is answered 503.
            s = held.pop()
            s.sendall(b" " * (65536 - 60001))
            reply, _ = read_until_closed(s, 10.0)
            s.close()
            assert reply.startswith(b"HTTP/1.1 503") or reply.startswith(b"HTTP/1.1 400"), reply[:200]
        finally:
            for s in held:
                s.close()


def test_declared_length_alone_reserves_nothing():
    """Four declared 100 MiB bodies (more than the 256 MiB budget together
    with a fifth) no longer take the budget before any byte arrives."""
    with Server(["--max-body", "100M", "--body-budget", "256M"]) as srv:
        head = (b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 104857600\r\nExpect: 100-continue\r\n\r\n")
        held = []
        try:
            for _ in range(5):
                s = connect(srv)
                s.sendall(head)
                assert s.recv(4096).startswith(b"HTTP/1.1 100"), "headers not accepted"
                held.append(s)
            assert metrics(srv)["clickflow_http_body_bytes_in_flight"] == 0
        finally:
            for s in held:
                s.close()


def test_stalled_body_is_cut_and_gives_its_budget_back():
    with Server(["--body-stall-timeout", "1s", "--request-deadline", "60s", "--connection-timeout", "60s"]) as srv:
        s = connect(srv)
        try:
            s.sendall(post_head(1000) + b"[" * 10)
            wait_for(lambda: metrics(srv)["clickflow_http_body_bytes_in_flight"] == 10, "10 bytes in flight")
            # Without the stall timeout nothing closes this before 60 s.
            _, closed = read_until_closed(s, 15.0)
            assert closed, "a stalled body kept its connection"
        finally:
            s.close()
        m = wait_for(lambda: (lambda m: m if m["clickflow_http_body_bytes_in_flight"] == 0 else None)(metrics(srv)),
                     "the budget to come back")
        assert m["clickflow_http_connections_timed_out_total"] >= 1, m


def test_a_body_that_keeps_arriving_is_not_cut():
    """The stall timeout is about silence, not total time: a body sent in
    pieces, each well within it, is answered."""
    with Server(["--body-stall-timeout", "2s"]) as srv:
        body = events_body(20)
        s = connect(srv)
        try:
            s.sendall(post_head(len(body)))
            for i in range(0, len(body), 100):
                s.sendall(body[i:i + 100])
                # Pieces 100 ms apart: 2.5 s in all, each far within 2 s.
                time.sleep(0.1)  # pacing the client, not a timing assertion
            reply = s.recv(65536)
            assert reply.startswith(b"HTTP/1.1 202"), reply[:200]
        finally:
            s.close()


def test_slow_headers_are_cut_by_the_header_timeout():
    with Server(["--header-timeout", "1s", "--request-deadline", "60s", "--connection-timeout", "60s"]) as srv:
        trickle = connect(srv)
        silent = connect(srv)
        try:
            trickle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            for s in (trickle, silent):
                _, closed = read_until_closed(s, 15.0)
                assert closed, "a connection without complete headers was kept"
        finally:
            trickle.close()
            silent.close()
        assert srv.request("GET", "/healthz")[0] == 200


def test_a_full_connection_table_sheds_slow_openers():
    """Found: slow-header connections filled --max-connections and a normal
    client waited ~60 s. Now the table sheds the connection that has given
    least (here: the oldest of those without a complete request)."""
    with Server(["--max-connections", "32", "--max-connections-per-ip", "32", "--header-timeout", "60s",
                 "--request-deadline", "120s", "--connection-timeout", "60s"]) as srv:
        slow = []
        try:
            for i in range(48):
                s = connect(srv, "127.0.0.%d" % (2 + i % 3))
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append(s)
            status, _ = srv.request("GET", "/healthz", timeout=10.0)
            assert status == 200
            m = metrics(srv)
            assert m["clickflow_http_connections_shed_total"] >= 16, m
            assert m["clickflow_http_connections"] <= 32, m
        finally:
            for s in slow:
                s.close()


def test_a_table_full_of_trickling_bodies_sheds_the_smallest():
    """Bodies that keep within the stall timeout are shed last, fewest
    bytes first, so they cannot hold the table either."""
    with Server(["--max-connections", "16", "--max-connections-per-ip", "16", "--body-stall-timeout", "60s",
                 "--connection-timeout", "60s", "--request-deadline", "120s"]) as srv:
        held = []
        try:
            big = connect(srv, "127.0.0.2")
            big.sendall(post_head(4000) + b"[" + b" " * 2000)
            held.append(big)
            # The server must have read big's headers and body bytes before
            # the others arrive: until then it is a connection that never
            # finished its headers, which is shed first (a race on a slow
            # machine, not the rule under test).
            wait_for(lambda: metrics(srv)["clickflow_http_body_bytes_in_flight"] >= 2001,
                     "the big body's bytes to arrive")
            for i in range(24):
                s = connect(srv, "127.0.0.%d" % (3 + i % 3))
                s.sendall(post_head(1000) + b"[")
                held.append(s)
            status, _ = srv.request("GET", "/healthz", timeout=10.0)
            assert status == 200
            assert metrics(srv)["clickflow_http_connections_shed_total"] >= 8
            # The body with the most bytes is still there and completes.
            big.sendall(b" " * 1996 + b"[]]")   # 4000 bytes in all: [[]], one invalid event
            reply = big.recv(4096)
            assert reply.startswith(b"HTTP/1.1 202"), reply[:200]
        finally:
            for s in held:
                s.close()


def test_nul_and_control_bytes_in_urls_are_refused():
    with Server(["--idle-timeout", "0"]) as srv:
        assert srv.request("POST", "/api/v1/events", [{"user_id": "u1", "page_url": "/p"}])[0] == 202
        for path in ("/index.html%00.js", "/api/v1/windows?page_url=/p%00/hidden",
                     "/api/v1/sessions/%00", "/api/v1/sessions/u1%00x", "/healthz?x=%00"):
            status, body = srv.request("GET", path)
            assert status == 400, (path, status, body)
            assert "NUL" in body["error"], body
        status, body = srv.request("POST", "/api/v1/events%00", [{"user_id": "u1", "page_url": "/p"}])
        assert status == 400, (status, body)
        # An encoded percent sign is fine ("%2500" decodes to "%00", no NUL).
        assert srv.request("GET", "/api/v1/windows?page_url=/p%2500")[0] == 200
        for raw in (b"GET /healthz\x01 HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /he\x7flthz HTTP/1.1\r\nHost: x\r\n\r\n"):
            s = connect(srv)
            try:
                s.sendall(raw)
                reply, _ = read_until_closed(s, 5.0)
            finally:
                s.close()
            # Refused either way: by us (JSON 400) or by libmicrohttpd.
            assert reply.startswith(b"HTTP/1.1 400") or reply == b"", (raw, reply[:200])
            assert not reply.startswith(b"HTTP/1.1 200"), reply


def test_ambiguous_framing_is_refused_and_closed():
    """RFC 9112 6.3: two different Content-Length values, or Content-Length
    with Transfer-Encoding, is a 400 and the connection closes (it could
    otherwise carry a smuggled request)."""
    with Server() as srv:
        cases = [
            b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n[]",
            b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]
        for raw in cases:
            s = connect(srv)
            try:
                # A second, smuggled request follows on the same connection.
                s.sendall(raw + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                reply, closed = read_until_closed(s, 10.0)
            finally:
                s.close()
            assert reply.startswith(b"HTTP/1.1 400"), (raw, reply[:300])
            assert b"application/json" in reply, reply[:300]
            assert closed, "the connection stayed open after ambiguous framing"
            assert reply.count(b"HTTP/1.1 ") == 1, reply   # the smuggled request was not answered
        # The same value twice is not ambiguous.
        s = connect(srv)
        try:
            s.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n[]")
            assert s.recv(4096).startswith(b"HTTP/1.1 202")
        finally:
            s.close()


def nofile_server(args, limit=256):
    """A Server whose binary runs under `prlimit --nofile=limit:limit` (soft
    and hard), through a small wrapper script in the server's data dir."""
    srv = Server(args)
    wrapper = os.path.join(srv.data_dir, "clickflow-nofile")
    real = os.environ.get("CLICKFLOW_BIN", "build/server/clickflow")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nexec prlimit --nofile=%d:%d "%s" "$@"\n' % (limit, limit, os.path.abspath(real)))
    os.chmod(wrapper, stat.S_IRWXU)
    srv.bin = wrapper
    return srv


def snapshots(srv):
    d = os.path.join(srv.data_dir, "data")
    return sorted(f for f in os.listdir(d) if f.startswith("snapshot-"))


def test_connections_fit_a_low_open_file_limit():
    """Found: with 1024 open files and --max-connections 4096, idle
    connections exhausted the descriptors and the log writer failed. Now the
    limits are fitted below the open-file limit (said at start-up), and a
    full table sheds idle openers, so events keep being accepted."""
    srv = nofile_server(["--snapshot-interval", "200ms", "--header-timeout", "60s", "--connection-timeout", "60s"])
    with srv:
        assert "open-file limit 256" in srv.read_log(), srv.read_log()
        idle = []
        try:
            for i in range(300):
                idle.append(connect(srv, "127.0.0.%d" % (2 + i % 4)))
            for n in range(5):
                status, body = srv.request("POST", "/api/v1/events",
                                           [{"user_id": "u%d" % n, "page_url": "/p"}], timeout=10.0)
                assert status == 202, (status, body)
            assert srv.proc.poll() is None, srv.read_log()
            m = metrics(srv)
            assert m["clickflow_http_connections_shed_total"] > 0, m
        finally:
            for s in idle:
                s.close()
        status, stats = srv.request("GET", "/api/v1/stats")
        assert status == 200 and stats["accepted"] == 5, stats
        assert srv.proc.poll() is None


def test_a_websocket_flood_leaves_descriptors_for_the_log():
    """Sockets that never finish a WebSocket handshake are not WebSocket
    clients yet, so --ws-max-clients does not hold them; past the open-file
    reserve they are refused, and ingest, the log and snapshots go on."""
    srv = nofile_server(["--snapshot-interval", "200ms"])
    with srv:
        flood = []
        try:
            for _ in range(300):
                s = socket.create_connection(("127.0.0.1", srv.ws_port), timeout=10.0)
                flood.append(s)
                try:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")   # and never the rest
                except OSError:
                    pass   # refused already: that is the point
            before = snapshots(srv)
            for n in range(5):
                status, body = srv.request("POST", "/api/v1/events",
                                           [{"user_id": "u%d" % n, "page_url": "/p"}], timeout=10.0)
                assert status == 202, (status, body)
            # A snapshot after those events needs a descriptor of the reserve.
            wait_for(lambda: snapshots(srv) and snapshots(srv)[-1] > (before[-1] if before else ""),
                     "a snapshot after the flood")
            assert srv.proc.poll() is None, srv.read_log()
        finally:
            for s in flood:
                s.close()
        assert "no descriptors to spare" in srv.read_log()


if __name__ == "__main__":
    run_tests([
        test_one_address_cannot_take_the_whole_body_budget,
        test_declared_length_alone_reserves_nothing,
        test_stalled_body_is_cut_and_gives_its_budget_back,
        test_a_body_that_keeps_arriving_is_not_cut,
        test_slow_headers_are_cut_by_the_header_timeout,
        test_a_full_connection_table_sheds_slow_openers,
        test_a_table_full_of_trickling_bodies_sheds_the_smallest,
        test_nul_and_control_bytes_in_urls_are_refused,
        test_ambiguous_framing_is_refused_and_closed,
        test_connections_fit_a_low_open_file_limit,
        test_a_websocket_flood_leaves_descriptors_for_the_log,
    ])
