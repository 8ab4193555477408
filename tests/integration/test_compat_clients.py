"""The real, unmodified @segment/analytics-node and @umami/node (pinned in
tests/compat/package-lock.json) send to the real binary through a site key
(SPEC 15), and every event arrives exactly once with the right user and page:
Segment's track, page, screen and identify in one batch whose first delivery
is lost after the server accepted it (the SDK retries the same messageIds),
an application that sends a messageId again, and Umami's pageview, custom
event and identify. Skipped (exit 77) only when node or the npm packages are
not installed (deploy/install-deps.sh --test installs them)."""
import json
import os
import shutil
import signal
import subprocess
import sys

import compat_util
from harness import Server, run_tests

COMPAT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "compat")
TOKEN = "it-secret-token"
AUTH = {"Authorization": "Bearer " + TOKEN}


def page_count(srv, page):
    return compat_util.page_count(srv, page, AUTH)


def page_views(srv, user):
    status, body = srv.request("GET", "/api/v1/sessions/" + user, headers=AUTH)
    assert status == 200, body
    return sum(s["page_views"] for s in body["items"])


def test_segment_and_umami_clients_exactly_once():
    with Server(["--site", "shop=https://shop.example", "--ingest-token", TOKEN]) as srv:
        proc = subprocess.run(["node", "clients.mjs", "http://127.0.0.1:%d" % srv.http_port, "shop"],
                              cwd=COMPAT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        seg = out["segment"]
        # Two flushes plus the retry of the first: three requests, all 200.
        assert seg["requests"] == 3, seg
        assert seg["statuses"] == [200, 200, 200], seg
        assert seg["errors"] == [], seg
        assert out["umami"]["statuses"] == [200, 200, 200], out

        status, stats = srv.request("GET", "/api/v1/stats", headers=AUTH)
        assert status == 200
        # Segment: m1 m2 m3 and m4 (identify makes no click event); Umami:
        # the pageview and the custom event. The retried batch (3) and the
        # re-sent m1 are the duplicates.
        assert stats["accepted"] == 6, stats
        assert stats["duplicates"] == 4, stats
        assert stats["rejected"] == 0, stats

        # userId, else anonymousId; properties.url, else context.page.url.
        assert page_views(srv, "seg-u1") == 2
        assert page_views(srv, "seg-anon-7") == 1
        assert page_views(srv, "seg-u2") == 1
        assert page_count(srv, "https://shop.example/seg/pricing?utm_source=news") == (1, 1)
        assert page_count(srv, "/seg/pricing") == (1, 1)
        assert page_count(srv, "https://shop.example/seg/home") == (1, 1)
        # Umami's url as sent; no url: "(none)", shared with Segment's screen
        # call. The Umami events have no user: a derived visitor id (they
        # would be rejected with "user_id is required" otherwise).
        assert page_count(srv, "/umami/home?utm_source=x") == (1, 1)
        assert page_count(srv, "(none)") == (2, 2)


def query(srv, sql):
    status, body = srv.request("POST", "/api/v1/query", sql, {"Content-Type": "application/sql", **AUTH})
    assert status == 200, (status, body)
    return body["items"]


def test_identify_then_track_joins_user_traits():
    """identify fills the built-in user_traits table (SPEC 15) through the
    log like table rows: a stream-table join sees the traits of the track
    that follows, also after kill -9."""
    srv = Server(["--site", "shop=https://shop.example", "--ingest-token", TOKEN, "--shards", "2"])
    srv.start()
    try:
        view = ("CREATE VIEW plans AS SELECT c.page_url AS page_url, t.traits.plan AS plan, COUNT(*) AS n "
                "FROM clicks c JOIN user_traits t ON c.user_id = t.user_id GROUP BY c.page_url, t.traits.plan")
        status, body = srv.request("POST", "/api/v1/sql", view, {"Content-Type": "application/sql", **AUTH})
        assert status == 200, body
        proc = subprocess.run(["node", "clients.mjs", "http://127.0.0.1:%d" % srv.http_port, "shop", "traits"],
                              cwd=COMPAT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["segment"]["errors"] == [] and out["umami"]["statuses"] == [200, 200], out
        status, row = srv.request("GET", "/api/v1/tables/user_traits/rows/seg-t1", headers=AUTH)
        assert status == 200, row
        assert row["traits"] == {"plan": "enterprise", "email": "t1@shop.example"}, row
        assert row["site"] == "shop" and isinstance(row["updated_at"], int), row
        want = [{"page_url": "/traits/umami", "plan": "team", "n": 1},
                {"page_url": "https://shop.example/traits/buy", "plan": "enterprise", "n": 1}]
        assert query(srv, "SELECT page_url, plan, n FROM plans ORDER BY page_url") == want
        _, tables = srv.request("GET", "/api/v1/tables", headers=AUTH)
        assert [t["rows"] for t in tables["items"] if t["name"] == "user_traits"] == [2], tables
        # Logged like table rows: back after kill -9, and still joined.
        srv.stop(signal.SIGKILL)
        srv.start()
        status, again = srv.request("GET", "/api/v1/tables/user_traits/rows/seg-t1", headers=AUTH)
        assert status == 200 and again == row, again
        assert query(srv, "SELECT page_url, plan, n FROM plans ORDER BY page_url") == want
        # Built in: not droppable.
        status, body = srv.request("POST", "/api/v1/sql", "DROP TABLE user_traits",
                                   {"Content-Type": "application/sql", **AUTH})
        assert status == 400 and "built in" in body["error"], body
    finally:
        srv.stop()


if __name__ == "__main__":
    if not shutil.which("node") or not os.path.isdir(os.path.join(COMPAT, "node_modules", "@segment")):
        print("SKIP: node or tests/compat/node_modules missing (run deploy/install-deps.sh --test)")
        sys.exit(77)
    run_tests([test_segment_and_umami_clients_exactly_once, test_identify_then_track_joins_user_traits])
