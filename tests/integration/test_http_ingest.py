"""POST /api/v1/events: the body formats, per-event errors and the exact
response body (SPEC section 3, docs/API.md)."""
import json
import re

from harness import Server, run_tests

EV = {"user_id": "u1", "page_url": "/a"}
JSON = {"Content-Type": "application/json"}


def post(srv, body, ctype="application/json", headers=None):
    h = {"Content-Type": ctype}
    h.update(headers or {})
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return srv.raw_request("POST", "/api/v1/events", body, h)


def body_of(data):
    return json.loads(data)


def test_single_object_array_and_exact_body():
    with Server(["--idle-timeout", "0"]) as srv:
        st, hdrs, data = post(srv, EV)
        assert st == 202, (st, data)
        assert hdrs["content-type"] == "application/json", hdrs
        assert hdrs["x-content-type-options"] == "nosniff", hdrs
        assert body_of(data) == {"accepted": 1, "duplicates": 0, "rejected": 0, "errors": []}, data

        st, _, data = post(srv, [dict(EV, event_id="e1"), 42, dict(EV, page_url="/b")])
        assert st == 202, (st, data)
        assert body_of(data) == {"accepted": 2, "duplicates": 0, "rejected": 1,
                                 "errors": [{"index": 1, "error": "event must be a JSON object"}]}, data

        # The same event_id again is a duplicate, counted nowhere else.
        st, _, data = post(srv, [dict(EV, event_id="e1")])
        assert st == 202
        assert body_of(data) == {"accepted": 0, "duplicates": 1, "rejected": 0, "errors": []}, data

        st, _, data = post(srv, [])
        assert st == 202
        assert body_of(data) == {"accepted": 0, "duplicates": 0, "rejected": 0, "errors": []}, data

        st, stats = srv.request("GET", "/api/v1/stats")
        assert st == 200 and stats["accepted"] == 3, stats
        assert stats["rejected"] == 1 and stats["duplicates"] == 1, stats
        # State accounting: one user's open session is part of all state.
        assert stats["open_sessions"] == 1, stats
        assert 0 < stats["session_state_bytes"] <= stats["state_bytes"], stats
        # Prometheus exposition: every metric family is declared once.
        st, _, text = srv.raw_request("GET", "/metrics")
        assert st == 200, st
        types = [l.split()[2] for l in text.decode().splitlines() if l.startswith("# TYPE ")]
        assert len(types) == len(set(types)), sorted(t for t in types if types.count(t) > 1)
        assert "clickflow_session_state_bytes" in types, types


def test_invalid_event_reasons_are_listed_with_index():
    with Server() as srv:
        st, _, data = post(srv, [{"page_url": "/x"}, EV, {"user_id": "", "page_url": "/y"}])
        assert st == 202, (st, data)
        b = body_of(data)
        assert (b["accepted"], b["rejected"]) == (1, 2), b
        assert [e["index"] for e in b["errors"]] == [0, 2], b
        assert all(isinstance(e["error"], str) and e["error"] for e in b["errors"]), b


def test_text_plain_and_charset_parameters():
    with Server() as srv:
        # navigator.sendBeacon(url, string) sends text/plain;charset=UTF-8.
        st, _, data = post(srv, json.dumps([EV, EV]), "text/plain;charset=UTF-8")
        assert st == 202, (st, data)
        assert body_of(data)["accepted"] == 2, data
        st, _, data = post(srv, json.dumps(EV), "Application/JSON; charset=utf-8")
        assert st == 202, (st, data)


def test_ndjson_lines_and_per_line_errors():
    with Server() as srv:
        body = "\n".join([json.dumps(EV), "", "not json", "[1,2]", json.dumps(dict(EV, user_id="u2"))]) + "\r\n"
        st, _, data = post(srv, body, "application/x-ndjson")
        assert st == 202, (st, data)
        assert body_of(data) == {"accepted": 2, "duplicates": 0, "rejected": 2, "errors": [
            {"index": 1, "error": "line is not valid JSON"},
            {"index": 2, "error": "event must be a JSON object"}]}, data
        # No line parses at all: the body is not JSON, 400, nothing accepted.
        st, _, data = post(srv, "a\nb\n", "application/x-ndjson")
        assert st == 400, (st, data)
        assert "error" in body_of(data)


def test_not_json_is_400_and_nothing_is_accepted():
    with Server() as srv:
        for bad in ["nope", '{"user_id": "u"', json.dumps(EV) + " trailing", "", "42", '[{"user_id":"u","page_url":"/a"},]']:
            st, hdrs, data = post(srv, bad)
            assert st == 400, (bad, st, data)
            assert hdrs["content-type"] == "application/json"
            assert isinstance(body_of(data)["error"], str), data
        st, stats = srv.request("GET", "/api/v1/stats")
        assert stats["accepted"] == 0 and stats["rejected"] == 0, stats


def test_errors_list_is_capped_at_100():
    with Server() as srv:
        st, _, data = post(srv, [1] * 150)
        assert st == 202, (st, data)
        b = body_of(data)
        assert b["rejected"] == 150 and len(b["errors"]) == 100, (b["rejected"], len(b["errors"]))
        assert b["errors"][-1]["index"] == 99


def test_untrusted_text_is_escaped_in_json():
    with Server() as srv:
        st, _, data = post(srv, EV, headers={})
        st, hdrs, data = srv.raw_request("GET", '/api/v1/sessions/%22%3C%2Fscript%3E%5C')
        assert st == 200, (st, data)
        assert body_of(data)["user_id"] == '"</script>\\', data


def test_single_event_answers_are_exact_under_every_policy():
    """The answers of a one-event request (one accepted, one duplicate) are
    built once and shared (server/http.c), the parked ones under --fsync
    always too: the same bytes and headers as a per-request answer, each
    counted in /metrics."""
    for policy in ("batch", "always"):
        with Server(["--fsync", policy]) as srv:
            st, hdrs, data = post(srv, dict(EV, event_id="s1"))
            assert st == 202 and data == b'{"accepted":1,"duplicates":0,"rejected":0,"errors":[]}', (policy, data)
            st, hdrs2, data = post(srv, dict(EV, event_id="s1"))
            assert st == 202 and data == b'{"accepted":0,"duplicates":1,"rejected":0,"errors":[]}', (policy, data)
            # Two events: an answer built for the request, with the same headers.
            st, hdrs3, data = post(srv, [dict(EV, event_id="s2"), dict(EV, event_id="s3")])
            assert st == 202 and data == b'{"accepted":2,"duplicates":0,"rejected":0,"errors":[]}', (policy, data)
            for h in (hdrs, hdrs2):
                assert {k: v for k, v in h.items() if k not in ("date", "content-length")} == \
                    {k: v for k, v in hdrs3.items() if k not in ("date", "content-length")}, (h, hdrs3)
                assert h["content-length"] == str(len(b'{"accepted":1,"duplicates":0,"rejected":0,"errors":[]}'))
            st, _, text = srv.raw_request("GET", "/metrics")
            assert 'clickflow_http_responses_total{code="202"} 3' in text.decode(), text


def test_shared_answers_and_counts_on_every_http_thread():
    """Each HTTP thread builds its own pair of shared one-event answers and
    counts its answers in its own /metrics row (server/http_resp.c): over
    connections spread on both workers (libmicrohttpd places a connection
    by its descriptor, fd mod workers), every one-event answer is exact,
    accepted and duplicate alike, parked (--fsync always) or not, and
    /metrics sums every thread's count."""
    import http.client
    one = b'{"accepted":1,"duplicates":0,"rejected":0,"errors":[]}'
    dup = b'{"accepted":0,"duplicates":1,"rejected":0,"errors":[]}'
    for policy in ("batch", "always"):
        with Server(["--http-threads", "2", "--fsync", policy, "--idle-timeout", "0"]) as srv:
            conns = [http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10) for _ in range(6)]
            for c in conns:
                c.connect()
            sent = 0
            for rnd in range(3):
                for i, c in enumerate(conns):
                    eid = "t%d-%d" % (i, rnd)
                    for want in (one, dup):
                        c.request("POST", "/api/v1/events", json.dumps(dict(EV, event_id=eid)), JSON)
                        r = c.getresponse()
                        data = r.read()
                        sent += 1
                        assert r.status == 202 and data == want, (policy, i, rnd, r.status, data)
            for c in conns:
                c.close()
            st, _, text = srv.raw_request("GET", "/metrics")
            assert 'clickflow_http_responses_total{code="202"} %d\n' % sent in text.decode(), (sent, text)


def test_shared_answers_carry_one_current_date():
    """The shared one-event answers carry their own Date header, built again
    each second (server/http_resp.c; libmicrohttpd then adds none): every
    answer has exactly one Date, it names the second the answer was sent in
    (within the client's clock reading before and after, one second of
    slack), and it moves on with the clock on a kept-alive connection,
    parked (--fsync always) or not."""
    import email.utils
    import socket
    import time
    for policy in ("batch", "always"):
        with Server(["--fsync", policy, "--idle-timeout", "0"]) as srv:
            s = socket.create_connection(("127.0.0.1", srv.http_port))
            s.settimeout(10.0)
            buf = b""
            seen = set()
            deadline = time.monotonic() + 10
            n = 0
            try:
                while len(seen) < 2:
                    assert time.monotonic() < deadline, ("the Date never changed", policy, seen)
                    body = json.dumps(dict(EV, event_id="d%d" % (n // 2))).encode()
                    n += 1
                    t0 = time.time()
                    s.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                    while b"\r\n\r\n" not in buf:
                        buf += s.recv(4096)
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
                    while len(buf) < length:
                        buf += s.recv(4096)
                    data, buf = buf[:length], buf[length:]
                    t1 = time.time()
                    assert head.startswith(b"HTTP/1.1 202"), head
                    assert data in (b'{"accepted":1,"duplicates":0,"rejected":0,"errors":[]}',
                                    b'{"accepted":0,"duplicates":1,"rejected":0,"errors":[]}'), data
                    dates = re.findall(rb"(?im)^date: *(.*?)\r?$", head)
                    assert len(dates) == 1, (policy, head)
                    when = email.utils.parsedate_to_datetime(dates[0].decode()).timestamp()
                    assert int(t0) - 1 <= when <= t1 + 1, (policy, dates[0], t0, t1)
                    seen.add(dates[0])
            finally:
                s.close()


def test_repeated_headers_count_by_their_first_value():
    """The request head is read in one walk (server/http_conn.c,
    http_head_scan) that keeps the first value of each header the POST path
    uses, as a lookup by name answers: with two Content-Type headers the
    first decides the body format, with two User-Agent and two Referer
    headers the first is enriched."""
    import os
    import socket

    def raw(port, head_lines, body):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(10.0)
        try:
            s.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
                      b"".join(h + b"\r\n" for h in head_lines) +
                      b"Content-Length: %d\r\n\r\n" % len(body) + body)
            data = b""
            while True:
                d = s.recv(65536)
                if not d:
                    return data
                data += d
        finally:
            s.close()

    bot = b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    chrome = (b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              b"Chrome/120.0.0.0 Safari/537.36")
    with Server(["--idle-timeout", "0"]) as srv:
        nd = b'{"user_id": "n1", "page_url": "/a"}\n{"user_id": "n2", "page_url": "/b"}\n'
        data = raw(srv.http_port, [b"Content-Type: application/x-ndjson", b"Content-Type: application/json"], nd)
        assert data.startswith(b"HTTP/1.1 202") and b'"accepted":2' in data, data
        data = raw(srv.http_port, [b"Content-Type: application/json", b"Content-Type: application/x-ndjson"], nd)
        assert data.startswith(b"HTTP/1.1 400"), data
        ev = json.dumps({"user_id": "ua1", "page_url": "/c"}).encode()
        data = raw(srv.http_port, [b"Content-Type: application/json", b"User-Agent: " + bot, b"User-Agent: " + chrome,
                                   b"Referer: https://first.example/x", b"Referer: https://second.example/y"], ev)
        assert data.startswith(b"HTTP/1.1 202"), data
        st, body = srv.request("GET", "/api/v1/streams/clicks/events?limit=10")
        assert st == 200, (st, body)
        item = [it for it in body["items"] if it["user_id"] == "ua1"][0]
        assert item["referrer_host"] == "first.example", item
        if os.path.exists("/usr/share/uap-core/regexes.yaml"):
            assert item["browser"] == "Googlebot" and item["is_bot"] is True, item


def test_keep_alive_bodies_of_every_size_are_read_whole():
    """One keep-alive connection reuses its body buffer from request to
    request (server/http.c): a shorter body after a longer one, NDJSON (whose
    parse writes into the buffer) and a refused body leave nothing behind
    for the next request."""
    import http.client
    with Server(["--idle-timeout", "0"]) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
        sock = None
        big = [dict(EV, page_url="/p%d" % i, element="e" * 20) for i in range(150)]
        steps = [
            ("application/json", json.dumps(dict(EV, page_url="/long/" + "x" * 300)), 202, 1),
            ("application/json", json.dumps(EV), 202, 1),
            ("application/json", json.dumps(big), 202, 150),   # over 4 KiB: not kept
            ("application/x-ndjson", json.dumps(EV) + "\n" + json.dumps(dict(EV, user_id="u2")), 202, 2),
            ("application/json", "{", 400, 0),
            ("application/json", json.dumps([EV]), 202, 1),
        ]
        for ctype, body, want, accepted in steps:
            conn.request("POST", "/api/v1/events", body, {"Content-Type": ctype})
            r = conn.getresponse()
            data = r.read()
            assert r.status == want, (ctype, body[:40], r.status, data)
            if want == 202:
                assert json.loads(data)["accepted"] == accepted, (body[:40], data)
            sock = sock or conn.sock
            assert conn.sock is sock, "the connection was not kept alive"
        conn.close()
        st, stats = srv.request("GET", "/api/v1/stats")
        assert stats["accepted"] == 155, stats



def test_keep_alive_request_state_is_fresh_for_every_uri():
    """One keep-alive connection reuses its request block (the state and the
    raw URI, server/http.c uri_logger) up to a URI of about 1 KiB: each
    request is routed by its own URI and starts from clean state, whether
    the one before had a longer URI, a shorter one, or one too long to
    keep."""
    import http.client
    with Server(["--idle-timeout", "0"]) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
        sock = None
        steps = [
            ("POST", "/api/v1/events?pad=" + "x" * 1500, json.dumps(EV), 202),   # not kept
            ("GET", "/api/v1/stats", None, 200),
            ("POST", "/api/v1/events?pad=" + "y" * 900, json.dumps([EV, EV]), 202),  # kept
            ("GET", "/api/v1/no-such-thing", None, 404),
            ("POST", "/api/v1/events", "{", 400),
            ("GET", "/api/v1/stats?pad=" + "z" * 600, None, 200),
            ("POST", "/api/v1/events", json.dumps(dict(EV, user_id="u2")), 202),
        ]
        for method, path, body, want in steps:
            conn.request(method, path, body, JSON if body else {})
            r = conn.getresponse()
            data = r.read()
            assert r.status == want, (method, path[:40], r.status, data)
            if path.startswith("/api/v1/stats"):
                assert "accepted" in json.loads(data), data
            sock = sock or conn.sock
            assert conn.sock is sock, "the connection was not kept alive"
        conn.close()
        st, stats = srv.request("GET", "/api/v1/stats")
        assert stats["accepted"] == 4, stats


if __name__ == "__main__":
    run_tests([test_single_object_array_and_exact_body, test_invalid_event_reasons_are_listed_with_index,
               test_text_plain_and_charset_parameters, test_ndjson_lines_and_per_line_errors,
               test_not_json_is_400_and_nothing_is_accepted, test_errors_list_is_capped_at_100,
               test_untrusted_text_is_escaped_in_json, test_single_event_answers_are_exact_under_every_policy,
               test_shared_answers_and_counts_on_every_http_thread, test_shared_answers_carry_one_current_date,
               test_repeated_headers_count_by_their_first_value,
               test_keep_alive_bodies_of_every_size_are_read_whole,
               test_keep_alive_request_state_is_fresh_for_every_uri])
