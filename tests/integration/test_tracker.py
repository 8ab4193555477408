"""GET /cf.js serves the web tracker (SPEC 15) from the binary: JavaScript,
cacheable, under 4 KB, byte for byte web/cf.js."""
import os

from harness import Server, run_tests

TRACKER = os.path.join(os.path.dirname(__file__), "..", "..", "web", "cf.js")


def test_tracker_is_served_as_cacheable_javascript():
    with open(TRACKER, "rb") as f:
        want = f.read()
    with Server() as srv:
        status, hdrs, body = srv.raw_request("GET", "/cf.js")
        assert status == 200, status
        assert hdrs["content-type"].startswith("text/javascript"), hdrs
        assert "max-age=" in hdrs.get("cache-control", ""), hdrs
        assert "public" in hdrs["cache-control"], hdrs
        assert hdrs.get("x-content-type-options") == "nosniff", hdrs
        assert body == want
        assert len(body) < 4096, len(body)
        # HEAD: the same headers, no body.
        status, hhdrs, hbody = srv.raw_request("HEAD", "/cf.js")
        assert status == 200, status
        assert hbody == b""
        assert hhdrs["content-type"] == hdrs["content-type"]
        # The script is read-only.
        status, hdrs, _ = srv.raw_request("POST", "/cf.js", body="x", headers={"Content-Type": "text/plain"})
        assert status == 405, status
        assert "GET" in hdrs.get("allow", ""), hdrs


if __name__ == "__main__":
    run_tests([test_tracker_is_served_as_cacheable_javascript])
