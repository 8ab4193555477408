"""GET /api/v1/sites lists the configured site keys (SPEC 15) for the
dashboard's snippet panel: in the order given, with their origins, strings
escaped as JSON; a read that needs the read token like every other read."""
from harness import Server, run_tests

# Site keys may hold any printable ASCII but space, ',', ';' and '='.
ODD_KEY = 'k<b>"&\\x'


def test_sites_lists_keys_and_origins_in_order():
    args = ["--site", "blog=https://blog.example,https://www.blog.example",
            "--site", ODD_KEY + "=*", "--site", "backend="]
    with Server(args=args) as srv:
        status, body = srv.request("GET", "/api/v1/sites")
        assert status == 200, body
        assert body == {"items": [
            {"key": "blog", "origins": ["https://blog.example", "https://www.blog.example"]},
            {"key": ODD_KEY, "origins": ["*"]},
            {"key": "backend", "origins": []},
        ]}, body


def test_sites_is_empty_without_site_keys():
    with Server() as srv:
        status, body = srv.request("GET", "/api/v1/sites")
        assert status == 200, body
        assert body == {"items": []}, body
        status, hdrs, _ = srv.raw_request("POST", "/api/v1/sites", body="{}")
        assert status == 405, status
        assert "GET" in hdrs.get("allow", ""), hdrs


def test_sites_needs_the_read_token():
    args = ["--read-token", "r3ad", "--site", "blog=https://blog.example"]
    with Server(args=args) as srv:
        status, body = srv.request("GET", "/api/v1/sites")
        assert status == 401, body
        assert "error" in body, body
        status, body = srv.request("GET", "/api/v1/sites", headers={"Authorization": "Bearer r3ad"})
        assert status == 200, body
        assert [s["key"] for s in body["items"]] == ["blog"], body


if __name__ == "__main__":
    run_tests([test_sites_lists_keys_and_origins_in_order, test_sites_is_empty_without_site_keys,
               test_sites_needs_the_read_token])
