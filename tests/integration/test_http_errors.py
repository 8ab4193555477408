"""Every error status of the HTTP API, each a JSON {"error": ...} with
X-Content-Type-Options (SPEC section 8, docs/API.md)."""
import json
import socket
import threading

from harness import Server, run_tests

EV = {"user_id": "u1", "page_url": "/a"}


def check_error(st, hdrs, data, want):
    assert st == want, (st, want, data)
    assert hdrs["content-type"] == "application/json", hdrs
    assert hdrs["x-content-type-options"] == "nosniff", hdrs
    err = json.loads(data)["error"]
    assert isinstance(err, str) and err, data


def raw_exchange(srv, head, body=b"", read_timeout=10.0):
    """Sends raw bytes, returns (status, headers, body) of the reply."""
    s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=read_timeout)
    try:
        s.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head_part, _, rest = data.partition(b"\r\n\r\n")
        lines = head_part.decode().split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        n = int(hdrs.get("content-length", "0"))
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, hdrs, rest
    finally:
        s.close()


def test_404_405_415():
    with Server() as srv:
        for path in ["/nope", "/api/v1/nope", "/api/v1", "/api/v1/sessions/", "/api/v1/sessions/a/b"]:
            check_error(*srv.raw_request("GET", path), 404)
        st, hdrs, data = srv.raw_request("GET", "/api/v1/events")
        check_error(st, hdrs, data, 405)
        assert hdrs["allow"] == "POST, OPTIONS", hdrs
        st, hdrs, data = srv.raw_request("DELETE", "/api/v1/stats")
        check_error(st, hdrs, data, 405)
        assert hdrs["allow"] == "GET, HEAD, OPTIONS", hdrs
        st, hdrs, data = srv.raw_request("POST", "/", "x", {"Content-Type": "text/plain"})
        check_error(st, hdrs, data, 405)
        assert hdrs["allow"] == "GET, HEAD", hdrs
        for ctype in ["application/x-www-form-urlencoded", "text/html", "application/jsonx"]:
            check_error(*srv.raw_request("POST", "/api/v1/events", json.dumps(EV), {"Content-Type": ctype}), 415)
        # No Content-Type at all.
        check_error(*raw_exchange(srv, b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n", b"{}"), 415)


def test_413_by_content_length_before_the_body():
    with Server(["--max-body", "1k"]) as srv:
        # The body is never sent: the answer must come from the headers alone.
        st, hdrs, data = raw_exchange(srv, b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\n"
                                           b"Content-Type: application/json\r\nContent-Length: 1025\r\n\r\n")
        check_error(st, hdrs, data, 413)
        # Exactly the limit is fine (then 400: it is not JSON).
        st, hdrs, data = raw_exchange(srv, b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\n"
                                           b"Content-Type: application/json\r\nContent-Length: 1024\r\n\r\n", b" " * 1024)
        check_error(st, hdrs, data, 400)


def test_413_by_chunked_body_and_by_batch_size():
    with Server(["--max-body", "1k", "--max-batch", "3"]) as srv:
        big = json.dumps([EV] * 40).encode()
        assert len(big) > 1024
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 100]), big[i:i + 100]) for i in range(0, len(big), 100)) + b"0\r\n\r\n"
        st, hdrs, data = raw_exchange(srv, b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                           b"Transfer-Encoding: chunked\r\n\r\n", chunked)
        check_error(st, hdrs, data, 413)
        st, _, data = srv.raw_request("POST", "/api/v1/events", json.dumps([EV] * 3), {"Content-Type": "application/json"})
        assert st == 202, (st, data)
        check_error(*srv.raw_request("POST", "/api/v1/events", json.dumps([EV] * 4), {"Content-Type": "application/json"}), 413)
        nd = "\n".join(json.dumps(EV) for _ in range(4))
        check_error(*srv.raw_request("POST", "/api/v1/events", nd, {"Content-Type": "application/x-ndjson"}), 413)
        st, stats = srv.request("GET", "/api/v1/stats")
        assert stats["accepted"] == 3, stats


def test_401_ingest_token():
    with Server(["--ingest-token", "s3cret"]) as srv:
        h = {"Content-Type": "application/json"}
        st, hdrs, data = srv.raw_request("POST", "/api/v1/events", json.dumps(EV), h)
        check_error(st, hdrs, data, 401)
        assert hdrs["www-authenticate"].startswith("Bearer"), hdrs
        for bad in ["Bearer wrong", "Bearer s3cre", "Bearer s3crett", "Basic czNjcmV0", "s3cret"]:
            check_error(*srv.raw_request("POST", "/api/v1/events", json.dumps(EV), dict(h, Authorization=bad)), 401)
        check_error(*srv.raw_request("POST", "/api/v1/watermark", json.dumps({"watermark": 1}), h), 401)
        st, _, data = srv.raw_request("POST", "/api/v1/events", json.dumps(EV), dict(h, Authorization="Bearer s3cret"))
        assert st == 202, (st, data)
        st, _, data = srv.raw_request("POST", "/api/v1/events", json.dumps(EV), dict(h, Authorization="bearer s3cret"))
        assert st == 202, (st, data)
        # Reads stay open without --read-token.
        assert srv.request("GET", "/api/v1/stats")[0] == 200


def test_401_read_token():
    with Server(["--read-token", "r3ad"]) as srv:
        for path in ["/api/v1/stats", "/api/v1/trending", "/api/v1/windows", "/api/v1/late", "/api/v1/sessions",
                     "/api/v1/sessions/u1", "/api/v1/info", "/metrics"]:
            check_error(*srv.raw_request("GET", path), 401)
            st, _, data = srv.raw_request("GET", path, headers={"Authorization": "Bearer r3ad"})
            assert st == 200, (path, st, data)
        for path in ["/healthz", "/readyz", "/"]:
            assert srv.raw_request("GET", path)[0] == 200, path
        # The read token does not open ingest... which is open here anyway.
        st, _, _ = srv.raw_request("POST", "/api/v1/events", json.dumps(EV), {"Content-Type": "application/json"})
        assert st == 202


def test_query_parameters_are_validated():
    with Server() as srv:
        for path in ["/api/v1/trending?n=0", "/api/v1/trending?n=1001", "/api/v1/trending?n=x", "/api/v1/trending?n=",
                     "/api/v1/trending?n=-1", "/api/v1/windows?type=hopping", "/api/v1/windows?state=done",
                     "/api/v1/windows?limit=0", "/api/v1/windows?limit=100001", "/api/v1/late?limit=abc",
                     "/api/v1/sessions?limit=100001", "/api/v1/sessions/%zz", "/api/v1/windows?page_url=" + "a" * 2049]:
            check_error(*srv.raw_request("GET", path), 400)
        for path in ["/api/v1/trending?n=1", "/api/v1/trending?n=1000", "/api/v1/windows?type=tumbling&state=open&limit=1",
                     "/api/v1/windows?type=sliding&state=closed&limit=100000&page_url=%2Fa", "/api/v1/late?limit=5",
                     "/api/v1/sessions?limit=7"]:
            st, body = srv.request("GET", path)
            assert st == 200 and isinstance(body["items"], list), (path, st, body)


def test_watermark():
    with Server(["--idle-timeout", "0"]) as srv:
        st, body = srv.request("POST", "/api/v1/watermark", {"watermark": 1795000000000})
        assert st == 200 and body == {"watermark": 1795000000000}, (st, body)
        # It never moves backwards.
        st, body = srv.request("POST", "/api/v1/watermark", {"watermark": 1000})
        assert st == 200 and body == {"watermark": 1795000000000}, (st, body)
        for bad in [b"{}", b'{"watermark": 1.5}', b'{"watermark": "1"}', b'{"watermark": 1e300}', b"[]", b"x",
                    b'{"Watermark": 5}']:
            check_error(*srv.raw_request("POST", "/api/v1/watermark", bad, {"Content-Type": "application/json"}), 400)
        check_error(*srv.raw_request("GET", "/api/v1/watermark"), 405)
        check_error(*srv.raw_request("POST", "/api/v1/watermark", b" " * 5000, {"Content-Type": "application/json"}), 413)


def test_overload_answers_503_with_retry_after_or_202():
    """A flood against tiny queues: every answer is 202 or a 503 with
    Retry-After, and exactly the 202s are counted."""
    with Server(["--queue-capacity", "1", "--shards", "1", "--max-batch", "10000"]) as srv:
        batch = json.dumps([dict(EV, page_url="/p%d" % i) for i in range(5000)])
        results = []
        lock = threading.Lock()

        def worker():
            for _ in range(3):
                st, hdrs, data = srv.raw_request("POST", "/api/v1/events", batch, {"Content-Type": "application/json"})
                with lock:
                    results.append((st, hdrs, data))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted = 0
        for st, hdrs, data in results:
            if st == 503:
                check_error(st, hdrs, data, 503)
                assert hdrs["retry-after"] == "1", hdrs
            else:
                assert st == 202, (st, data)
                accepted += json.loads(data)["accepted"]
        st, stats = srv.request("GET", "/api/v1/stats")
        assert stats["accepted"] == accepted, (stats, accepted)
        print("  flood: %d of %d requests got 503" % (sum(1 for r in results if r[0] == 503), len(results)))


if __name__ == "__main__":
    run_tests([test_404_405_415, test_413_by_content_length_before_the_body, test_413_by_chunked_body_and_by_batch_size,
               test_401_ingest_token, test_401_read_token, test_query_parameters_are_validated, test_watermark,
               test_overload_answers_503_with_retry_after_or_202])
