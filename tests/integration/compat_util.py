"""What the compatible-endpoint tests (test_compat.py,
test_compat_clients.py) share."""


def page_count(srv, page, headers=None):
    """(count, unique_users) of page: the count over its tumbling windows;
    the users from the sliding windows (5 min every minute), one of which
    holds all of a test's events even when they straddle a minute."""
    status, body = srv.request("GET", "/api/v1/windows?limit=100000", headers=headers)
    assert status == 200, body
    rows = [w for w in body["items"] if w["page_url"] == page]
    count = sum(w["count"] for w in rows if w["type"] == "tumbling")
    users = max([w["unique_users"] for w in rows if w["type"] == "sliding"] or [0])
    return count, users
