"""CORS: preflight and response headers for allowed origins only; the
probes, /api/v1/info, the dashboard and HEAD."""
import json

from harness import Server, run_tests

EV = {"user_id": "u1", "page_url": "/a"}
GOOD = "https://shop.example"


def test_preflight_for_allowed_origin():
    with Server(["--cors-origin", GOOD + ",http://other.example:8000"]) as srv:
        st, hdrs, data = srv.raw_request("OPTIONS", "/api/v1/events", headers={
            "Origin": GOOD, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization"})
        assert st == 204, (st, data)
        assert hdrs["access-control-allow-origin"] == GOOD, hdrs
        assert "POST" in hdrs["access-control-allow-methods"], hdrs
        allowed = [h.strip().lower() for h in hdrs["access-control-allow-headers"].split(",")]
        assert "content-type" in allowed and "authorization" in allowed, hdrs
        assert int(hdrs["access-control-max-age"]) > 0, hdrs
        assert hdrs["x-content-type-options"] == "nosniff"
        assert data == b""

        st, hdrs, data = srv.raw_request("POST", "/api/v1/events", json.dumps(EV),
                                         {"Content-Type": "application/json", "Origin": GOOD})
        assert st == 202
        assert hdrs["access-control-allow-origin"] == GOOD, hdrs
        assert "origin" in hdrs["vary"].lower(), hdrs
        # Errors carry the CORS headers too, so the page can read them.
        st, hdrs, _ = srv.raw_request("GET", "/api/v1/trending?n=0", headers={"Origin": "http://other.example:8000"})
        assert st == 400 and hdrs["access-control-allow-origin"] == "http://other.example:8000", hdrs


def test_other_origins_get_no_cors_headers():
    with Server(["--cors-origin", GOOD]) as srv:
        st, hdrs, _ = srv.raw_request("OPTIONS", "/api/v1/events", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert st == 204
        assert "access-control-allow-origin" not in hdrs and "access-control-allow-methods" not in hdrs, hdrs
        st, hdrs, _ = srv.raw_request("GET", "/api/v1/stats", headers={"Origin": "https://evil.example"})
        assert st == 200 and "access-control-allow-origin" not in hdrs, hdrs
    with Server() as srv:   # no --cors-origin: no CORS at all
        st, hdrs, _ = srv.raw_request("GET", "/api/v1/stats", headers={"Origin": GOOD})
        assert st == 200 and "access-control-allow-origin" not in hdrs, hdrs


def test_wildcard_origin():
    with Server(["--cors-origin", "*"]) as srv:
        st, hdrs, _ = srv.raw_request("GET", "/api/v1/stats", headers={"Origin": "https://any.example"})
        assert hdrs["access-control-allow-origin"] == "*", hdrs
        st, hdrs, _ = srv.raw_request("OPTIONS", "/api/v1/stats", headers={
            "Origin": "https://any.example", "Access-Control-Request-Method": "GET"})
        assert st == 204 and "GET" in hdrs["access-control-allow-methods"], hdrs


def test_probes_info_dashboard_metrics():
    with Server() as srv:
        st, body = srv.request("GET", "/healthz")
        assert st == 200 and body["status"] == "ok"
        st, body = srv.request("GET", "/readyz")
        assert st == 200, body
        st, body = srv.request("GET", "/api/v1/info")
        assert st == 200 and body["ws_port"] == srv.ws_port and body["ws_path"] == "/", body
        assert isinstance(body["version"], str)
        st, hdrs, data = srv.raw_request("GET", "/")
        assert st == 200 and hdrs["content-type"].startswith("text/html"), hdrs
        assert "cache-control" in hdrs and hdrs["x-content-type-options"] == "nosniff", hdrs
        st, hdrs, data = srv.raw_request("HEAD", "/api/v1/stats")
        assert st == 200 and data == b"", (st, data)
        st, hdrs, data = srv.raw_request("GET", "/metrics")
        assert st == 200 and hdrs["content-type"].startswith("text/plain; version=0.0.4"), hdrs
        assert b"clickflow_" in data, data[:200]
        text = data.decode()
        assert 'clickflow_http_responses_total{code="200"} ' in text, text
        assert "clickflow_http_body_bytes_in_flight 0" in text, text
        srv.raw_request("GET", "/nope")
        srv.raw_request("GET", "/nope")
        text = srv.raw_request("GET", "/metrics")[2].decode()
        assert 'clickflow_http_responses_total{code="404"} 2\n' in text, text


def test_info_behind_a_proxy_points_at_its_ws_location():
    # A proxy that forwards Host names the public host (test_http_host.py).
    with Server(["--allowed-host", "a.example"]) as srv:
        st, body = srv.request("GET", "/api/v1/info", headers={"X-Forwarded-Proto": "https", "Host": "a.example"})
        assert (body["ws_port"], body["ws_path"]) == (443, "/ws"), body
        st, body = srv.request("GET", "/api/v1/info", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Port": "8443"})
        assert (body["ws_port"], body["ws_path"]) == (8443, "/ws"), body
        st, body = srv.request("GET", "/api/v1/info", headers={"X-Forwarded-Proto": "http",
                                                               "X-Forwarded-Host": "a.example:8000"})
        assert (body["ws_port"], body["ws_path"]) == (8000, "/ws"), body
        st, body = srv.request("GET", "/api/v1/info", headers={"X-Forwarded-Proto": "http", "Host": "a.example"})
        assert (body["ws_port"], body["ws_path"]) == (80, "/ws"), body
        st, body = srv.request("GET", "/api/v1/info", headers={"X-Forwarded-Proto": "https", "Host": "a.example:9443"})
        assert (body["ws_port"], body["ws_path"]) == (9443, "/ws"), body
        st, body = srv.request("GET", "/api/v1/info")   # direct
        assert (body["ws_port"], body["ws_path"]) == (srv.ws_port, "/"), body


def test_sessions_user_id_is_url_decoded():
    with Server() as srv:
        st, body = srv.request("GET", "/api/v1/sessions/u%2F1%20x")
        assert st == 200 and body["user_id"] == "u/1 x" and body["items"] == [], body


if __name__ == "__main__":
    run_tests([test_preflight_for_allowed_origin, test_other_origins_get_no_cors_headers, test_wildcard_origin,
               test_probes_info_dashboard_metrics, test_info_behind_a_proxy_points_at_its_ws_location,
               test_sessions_user_id_is_url_decoded])
