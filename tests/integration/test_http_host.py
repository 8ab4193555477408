"""DNS rebinding guard (docs/API.md "DNS rebinding"): bound to loopback, the
API's reads, SQL and table-row deletes answer only requests whose Host is an
IP literal, localhost, a listed --allowed-host or the host of a
--cors-origin; ingest and the probes answer any Host."""
import json

from harness import Server, run_tests

EV = {"user_id": "u1", "page_url": "/a"}
REBOUND = "evil.example:8080"


def get(srv, path, host):
    st, _, data = srv.raw_request("GET", path, headers={"Host": host})
    return st, data


def test_rebound_name_cannot_read_or_define():
    with Server() as srv:
        assert srv.request("POST", "/api/v1/events", EV)[0] == 202
        for path in ("/api/v1/windows", "/api/v1/stats", "/metrics", "/api/v1/query?sql=SELECT%201"):
            st, data = get(srv, path, REBOUND)
            assert st == 403, (path, st, data)
            assert "--allowed-host" in json.loads(data)["error"], data
        st, _, data = srv.raw_request("POST", "/api/v1/sql", "CREATE STREAM s (k STRING);",
                                      {"Host": REBOUND, "Content-Type": "text/plain"})
        assert st == 403, (st, data)
        st, _, data = srv.raw_request("DELETE", "/api/v1/tables/t/rows/k", headers={"Host": REBOUND})
        assert st == 403, (st, data)
        # Nothing was defined by the refused statement.
        st, body = srv.request("GET", "/api/v1/streams")
        assert st == 200 and not [s for s in body.get("items", []) if s.get("name") == "s"], body


def test_names_that_cannot_be_rebound_are_answered():
    with Server() as srv:
        for host in ("127.0.0.1:%d" % srv.http_port, "localhost:%d" % srv.http_port, "LOCALHOST",
                     "app.localhost", "[::1]:8080", "10.1.2.3"):
            st, data = get(srv, "/api/v1/stats", host)
            assert st == 200, (host, st, data)


def test_ingest_and_probes_answer_any_host():
    with Server() as srv:
        st, _, data = srv.raw_request("POST", "/api/v1/events", json.dumps(EV),
                                      {"Host": REBOUND, "Content-Type": "application/json"})
        assert st == 202, (st, data)
        assert get(srv, "/healthz", REBOUND)[0] == 200
        st, body = srv.request("GET", "/api/v1/stats")
        assert body["accepted"] == 1, body


def test_listed_hosts_and_cors_origin_hosts_are_answered():
    with Server(["--allowed-host", "Analytics.Example, stats.example.",
                 "--cors-origin", "https://dash.example:8443"]) as srv:
        for host in ("analytics.example", "ANALYTICS.EXAMPLE:443", "stats.example", "stats.example.:80",
                     "dash.example"):
            assert get(srv, "/api/v1/stats", host)[0] == 200, host
        for host in ("evil.example", "analytics.example.evil.example", "xanalytics.example"):
            assert get(srv, "/api/v1/stats", host)[0] == 403, host


def test_star_and_non_loopback_bind_turn_the_check_off():
    with Server(["--allowed-host", "*"]) as srv:
        st, data = get(srv, "/api/v1/stats", REBOUND)
        assert st == 200, (st, data[:300])
    with Server(["--cors-origin", "*"]) as srv:
        st, data = get(srv, "/api/v1/stats", REBOUND)
        assert st == 200, (st, data[:300])
    # Bound to all addresses the server is reached by names it cannot know:
    # no check unless --allowed-host is given.
    with Server(["--bind", "0.0.0.0"]) as srv:
        st, data = get(srv, "/api/v1/stats", REBOUND)
        assert st == 200, (st, data[:300])
    with Server(["--bind", "0.0.0.0", "--allowed-host", "analytics.example"]) as srv:
        assert get(srv, "/api/v1/stats", REBOUND)[0] == 403
        assert get(srv, "/api/v1/stats", "analytics.example")[0] == 200


def test_bad_allowed_host_is_a_start_up_error():
    import os
    import subprocess
    binary = os.environ.get("CLICKFLOW_BIN", "build/server/clickflow")
    for bad in ("https://analytics.example", "analytics.example:8080", "a b"):
        r = subprocess.run([binary, "--allowed-host", bad, "--http-port", "1", "--ws-port", "2"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (bad, r.returncode, r.stderr)
        assert "allowed-host" in r.stderr, r.stderr


if __name__ == "__main__":
    run_tests([f for n, f in list(globals().items()) if n.startswith("test_") and callable(f)])
