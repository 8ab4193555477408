"""Hardening of the WebSocket front (issue 10): the Origin rule resists DNS
rebinding, only Sec-WebSocket-Version 13 is spoken, and a client that never
reads holds a bounded number of bytes (drops counted in ws_dropped)."""
import base64
import json
import os
import socket
import threading
import time

from harness import Server, run_tests
from ws_client import WsClient


def handshake(port, host_header, origin=None, version="13"):
    """Sends a raw upgrade request; returns the status code (0 when the
    connection closed without an answer)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10.0)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET / HTTP/1.1", "Host: " + host_header, "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: " + version]
        if origin:
            lines.append("Origin: " + origin)
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = s.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            data += chunk
        if not data.startswith(b"HTTP/1.1 "):
            return 0
        return int(data.split(b" ", 2)[1])
    finally:
        s.close()


def test_dns_rebinding_cannot_reach_the_websocket():
    """Found: Origin was compared with Host, and after DNS rebinding both
    name the attacker's host. Same-host now means a name that cannot be
    rebound: localhost, the bound address, an IP literal equal to Host."""
    with Server() as srv:
        ws, http = srv.ws_port, srv.http_port
        # The rebinding attack: both headers say evil.example.
        assert handshake(ws, "evil.example:%d" % ws, "http://evil.example:%d" % http) != 101
        assert handshake(ws, "evil.example", "http://evil.example") != 101
        # The dashboard's own origins.
        assert handshake(ws, "127.0.0.1:%d" % ws, "http://127.0.0.1:%d" % http) == 101
        assert handshake(ws, "localhost:%d" % ws, "http://localhost:%d" % http) == 101
        # The bound address, whatever Host says (a proxy may rewrite it).
        assert handshake(ws, "clickflow.internal", "http://127.0.0.1:%d" % http) == 101
        # Another IP literal than the one connected to is foreign.
        assert handshake(ws, "127.0.0.1:%d" % ws, "http://127.0.0.9:%d" % http) != 101
        # Non-browser clients send no Origin.
        assert handshake(ws, "anything") == 101
    # A configured public origin is allowed by name.
    with Server(["--cors-origin", "https://analytics.example"]) as srv:
        assert handshake(srv.ws_port, "analytics.example", "https://analytics.example") == 101
        assert handshake(srv.ws_port, "evil.example", "https://evil.example") != 101


def test_only_websocket_version_13():
    with Server() as srv:
        assert handshake(srv.ws_port, "127.0.0.1", version="99") != 101
        assert handshake(srv.ws_port, "127.0.0.1", version="8") != 101
        assert handshake(srv.ws_port, "127.0.0.1", version="13") == 101


def stats(srv):
    status, body = srv.request("GET", "/api/v1/stats")
    assert status == 200, (status, body)
    return body


def test_a_silent_client_is_bounded_in_bytes():
    """Found: the per-client queue was bounded in messages only; late
    events with 2 KB URLs of control characters (6 bytes each once
    escaped) let one silent client grow the server to 4.78 GB with
    ws_dropped still 0. Now the queue is bounded in bytes too, and a client
    that reads still gets the same messages."""
    with Server(["--idle-timeout", "0", "--ws-queue", "1000000", "--ws-queue-bytes", "1M",
                 "--allowed-lateness", "0"]) as srv:
        silent = WsClient(srv.ws_port, "/", rcvbuf=4096)
        reader = WsClient(srv.ws_port, "/")
        got = {"late_events": 0, "error": None}
        stop = threading.Event()

        def drain():
            try:
                while not stop.is_set():
                    try:
                        msg = reader.recv_json(timeout=0.5)
                    except TimeoutError:
                        continue
                    if msg["type"] == "late":
                        got["late_events"] += len(msg["data"])
            except Exception as e:  # noqa: BLE001 - reported by the test
                got["error"] = e

        try:
            silent.send_json({"subscribe": ["late"]})
            reader.send_json({"subscribe": ["late"]})
            assert silent.recv_json(timeout=10)["type"] == "subscribed"   # then never reads again
            assert reader.recv_json(timeout=10)["type"] == "subscribed"
            t = threading.Thread(target=drain)
            t.start()
            now = int(time.time() * 1000)
            assert srv.request("POST", "/api/v1/watermark", {"watermark": now})[0] == 200
            url = "/" + "\x01" * 2000
            sent = 0
            # About 12 KB per late event on the wire, 20 per request (each
            # late message well below --ws-queue-bytes): ~24 MB in all, far
            # more than the socket buffers can absorb.
            for b in range(100):
                events = [{"user_id": "u%d" % i, "page_url": url, "timestamp": now - 3600000 - b * 100 - i}
                          for i in range(20)]
                status, answer = srv.request("POST", "/api/v1/events", events)
                assert status == 202 and answer["accepted"] == 20, (status, answer)
                sent += 20
                # The reader drains each request before the next, so its own
                # queue never holds more than one request's pushes (well
                # below the byte bound) however slow the machine: only the
                # silent client's queue grows.
                until = time.monotonic() + 30
                while got["late_events"] < sent and got["error"] is None and time.monotonic() < until:
                    time.sleep(0.01)  # waiting for the reader thread, not timing anything
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (stats(srv)["ws_dropped"] == 0 or got["late_events"] < sent):
                time.sleep(0.05)  # waiting for the push thread to catch up
            stop.set()
            t.join()
            assert got["error"] is None, got["error"]
            s = stats(srv)
            assert s["late_dropped"] == sent, s
            assert got["late_events"] == sent, (got, sent)   # the reader lost nothing
            assert s["ws_dropped"] > 0, s                    # the silent client did
            status, text = srv.request("GET", "/metrics")
            assert "clickflow_ws_dropped_total" in text
        finally:
            stop.set()
            silent.sock.close()
            reader.sock.close()


if __name__ == "__main__":
    run_tests([
        test_dns_rebinding_cannot_reach_the_websocket,
        test_only_websocket_version_13,
        test_a_silent_client_is_bounded_in_bytes,
    ])
